package protocol_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/protocol"
)

// nested returns a JSON value nested depth levels deep: [[[...1...]]].
func nested(depth int) json.RawMessage {
	return json.RawMessage(strings.Repeat("[", depth) + "1" + strings.Repeat("]", depth))
}

// Finding: input nested 10,000 deep was accepted, then refused by every worker's decoder. One
// rule, CheckJSON, bounds the nesting for the coordinator and for every decoder.
func TestCheckJSONBoundsNesting(t *testing.T) {
	t.Parallel()
	require.NoError(t, protocol.CheckJSON(nested(protocol.MaxJSONDepth)))
	require.NoError(t, protocol.CheckJSON(json.RawMessage(`"[[[[[[`+strings.Repeat("{", 100)+`"`)), "brackets in strings do not count")
	err := protocol.CheckJSON(nested(protocol.MaxJSONDepth + 1))
	require.ErrorContains(t, err, "nested 65 levels deep; the limit is 64")
	require.ErrorContains(t, protocol.CheckJSON(nested(10_000)), "the limit is 64")
	require.ErrorContains(t, protocol.CheckJSON([]byte("\"\xff\"")), "UTF-8")
	require.ErrorContains(t, protocol.CheckJSON([]byte(`{"a":`)), "not valid JSON")
	require.ErrorContains(t, protocol.CheckJSON([]byte(`"\u0000"`)), `\u0000`)
	require.NoError(t, protocol.CheckJSON(nil), "no value")
}

func TestDecodersRefuseDeepJSON(t *testing.T) {
	t.Parallel()
	cmd := sampleCommand()
	cmd.Input = nested(protocol.MaxJSONDepth + 1)
	m, err := cmd.Encode()
	require.NoError(t, err)
	_, err = protocol.DecodeStepCommand(m)
	require.ErrorIs(t, err, protocol.ErrMalformed)
	require.ErrorContains(t, err, "input is nested")

	cmd = sampleCommand()
	cmd.Deps = map[string]json.RawMessage{"reserve": nested(100)}
	m, err = cmd.Encode()
	require.NoError(t, err)
	_, err = protocol.DecodeStepCommand(m)
	require.ErrorContains(t, err, "deps.reserve is nested")

	reply, err := protocol.EncodeStepReply(sampleCommand(), protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: nested(65)})
	require.NoError(t, err)
	_, err = protocol.DecodeReply(reply)
	require.ErrorContains(t, err, "output is nested")

	tx := &protocol.TxCommand{TxID: "t", Participant: "p", Kind: protocol.KindPrepare, Attempt: 1, Payload: nested(65)}
	m, err = tx.Encode()
	require.NoError(t, err)
	_, err = protocol.DecodeTxCommand(m)
	require.ErrorContains(t, err, "payload is nested")
}

// Finding: a reply with invalid UTF-8 decoded (encoding/json replaces the bytes) and was then
// applied or acknowledged as stale; it is malformed, so the coordinator dead-letters it.
func TestDecodeReplyRefusesInvalidUTF8(t *testing.T) {
	t.Parallel()
	good, err := protocol.EncodeStepReply(sampleCommand(), protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: "no"})
	require.NoError(t, err)
	bad := good
	bad.Body = []byte("{\"outcome\":\"failed\",\"error\":\"n\xffo\"}")
	_, err = protocol.DecodeReply(bad)
	require.ErrorIs(t, err, protocol.ErrMalformed)
	require.ErrorContains(t, err, "body is not valid UTF-8")

	for _, corr := range []string{"tx:3f1c2a7e-0000-4000-8000-000000000001:b\xffnk:prepare:1", "saga:3f1c\xff:0:action:1", "tx:t:p\x00:commit:1"} {
		m := protocol.Message{Type: protocol.TypeReply, CorrelationID: corr, Body: []byte(`{"outcome":"ack"}`)}
		_, err = protocol.DecodeReply(m)
		require.ErrorIs(t, err, protocol.ErrMalformed, "%q", corr)
	}
	q, err := protocol.EncodeTxQuery(protocol.TxQuery{TxID: "t", Participant: "p"}, "1")
	require.NoError(t, err)
	q.Body = []byte("{\"tx_id\":\"t\",\"participant\":\"p\xfe\"}")
	_, err = protocol.DecodeTxQuery(q)
	require.ErrorIs(t, err, protocol.ErrMalformed)
}

// Error texts are free text with a bound: a longer one is cut, at a character boundary.
func TestDecodeReplyCutsLongErrors(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", protocol.MaxErrorBytes) // two bytes each
	m, err := protocol.EncodeStepReply(sampleCommand(), protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: long})
	require.NoError(t, err)
	r, err := protocol.DecodeReply(m)
	require.NoError(t, err)
	require.Len(t, r.Error, protocol.MaxErrorBytes)
	require.True(t, strings.HasPrefix(long, r.Error))
}

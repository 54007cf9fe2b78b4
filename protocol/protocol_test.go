package protocol_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/protocol"
)

func sampleCommand() *protocol.StepCommand {
	return &protocol.StepCommand{
		SagaID: "3f1c2a7e-0000-4000-8000-000000000001", Step: "charge", StepIndex: 1, Kind: protocol.KindAction,
		Participant: "payments", Action: "charge", Attempt: 2, Input: json.RawMessage(`{"amount":10}`),
		Deps:          map[string]json.RawMessage{"reserve": json.RawMessage(`{"ok":true}`)},
		TimeoutMillis: 30_000,
	}
}

func TestStepCommandRoundTrip(t *testing.T) {
	t.Parallel()
	cmd := sampleCommand()
	m, err := cmd.Encode()
	require.NoError(t, err)
	require.Equal(t, "saga:3f1c2a7e-0000-4000-8000-000000000001:1:action:2", m.MessageID)
	require.Equal(t, protocol.TypeSagaAction, m.Type)
	require.Equal(t, protocol.Version, m.Headers[protocol.HeaderVersion])
	got, err := protocol.DecodeStepCommand(m)
	require.NoError(t, err)
	require.Equal(t, cmd, got)

	reply, err := protocol.EncodeStepReply(got, protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: json.RawMessage(`{"id":7}`)})
	require.NoError(t, err)
	require.Equal(t, m.MessageID, reply.CorrelationID, "a reply's correlation id is its command's message id")
	r, err := protocol.DecodeReply(reply)
	require.NoError(t, err)
	require.Equal(t, cmd.SagaID, r.SagaID)
	require.Equal(t, 1, r.StepIndex)
	require.EqualValues(t, protocol.KindAction, r.Kind)
	require.Equal(t, 2, r.Attempt)
	require.JSONEq(t, `{"id":7}`, string(r.Output))
}

func TestDecodeRejectsMalformed(t *testing.T) {
	t.Parallel()
	good, err := sampleCommand().Encode()
	require.NoError(t, err)
	with := func(f func(m *protocol.Message)) protocol.Message {
		m := good
		m.Headers = map[string]string{}
		for k, v := range good.Headers {
			m.Headers[k] = v
		}
		f(&m)
		return m
	}
	for name, tc := range map[string]struct {
		m    protocol.Message
		want string
	}{
		"wrong type":    {with(func(m *protocol.Message) { m.Type = "bogus" }), "type"},
		"not JSON":      {with(func(m *protocol.Message) { m.Body = []byte("garbage") }), "body"},
		"trailing data": {with(func(m *protocol.Message) { m.Body = append(append([]byte{}, good.Body...), '{') }), "trailing"},
		"missing saga":  {with(func(m *protocol.Message) { m.Body = []byte(`{"step":"a","kind":"action","attempt":1,"action":"x"}`) }), "saga_id"},
		"zero attempt": {with(func(m *protocol.Message) {
			m.Body = []byte(`{"saga_id":"s","step":"a","kind":"action","attempt":0,"action":"x"}`)
		}), "attempt"},
		"bad kind": {with(func(m *protocol.Message) {
			m.Body = []byte(`{"saga_id":"s","step":"a","kind":"nope","attempt":1,"action":"x"}`)
		}), "kind"},
		"negative timeout": {with(func(m *protocol.Message) {
			m.Body = []byte(`{"saga_id":"s","step":"a","kind":"action","attempt":1,"action":"x","timeout_ms":-1}`)
		}), "timeout_ms -1 is negative"},
		"id mismatch":      {with(func(m *protocol.Message) { m.MessageID = "saga:other:1:action:2" }), "message_id"},
		"future version":   {with(func(m *protocol.Message) { m.Headers[protocol.HeaderVersion] = "2" }), "version"},
		"oversized":        {with(func(m *protocol.Message) { m.Body = make([]byte, protocol.MaxBodyBytes+1) }), "exceeds"},
		"kind/type differ": {with(func(m *protocol.Message) { m.Type = protocol.TypeSagaCompensate }), "does not match"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := protocol.DecodeStepCommand(tc.m)
			require.Error(t, err)
			require.True(t, errors.Is(err, protocol.ErrMalformed), "every decode error is ErrMalformed: %v", err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

// Unknown fields are ignored, as protobuf does, so that a later minor version can add fields.
func TestDecodeIgnoresUnknownFields(t *testing.T) {
	t.Parallel()
	m, err := sampleCommand().Encode()
	require.NoError(t, err)
	m.Body = append(m.Body[:len(m.Body)-1], []byte(`,"added_in_1_1":true}`)...)
	got, err := protocol.DecodeStepCommand(m)
	require.NoError(t, err)
	require.Equal(t, sampleCommand(), got)
}

func TestDecodeSagaReplyChecks(t *testing.T) {
	t.Parallel()
	cmd := sampleCommand()
	for name, tc := range map[string]struct {
		reply protocol.StepReply
		want  string
	}{
		"unknown outcome": {protocol.StepReply{Outcome: "maybe"}, "outcome"},
		"huge output":     {protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: json.RawMessage(`"` + strings.Repeat("x", protocol.MaxOutputBytes) + `"`)}, "exceeds"},
	} {
		m, err := protocol.EncodeStepReply(cmd, tc.reply)
		require.NoError(t, err, name)
		_, err = protocol.DecodeReply(m)
		require.ErrorIs(t, err, protocol.ErrMalformed, name)
		require.Contains(t, err.Error(), tc.want, name)
	}
	m, err := protocol.EncodeStepReply(cmd, protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: "no"})
	require.NoError(t, err)
	m.CorrelationID = "tx:1:p:prepare:1"
	_, err = protocol.DecodeReply(m)
	require.ErrorIs(t, err, protocol.ErrMalformed, "a failure does not answer a prepare")
}

func TestTxMessagesRoundTrip(t *testing.T) {
	t.Parallel()
	cmd := &protocol.TxCommand{TxID: "tx-1", Participant: "bank-a", Kind: protocol.KindPrepare, Attempt: 1, Payload: json.RawMessage(`{"amount":5}`)}
	m, err := cmd.Encode()
	require.NoError(t, err)
	require.True(t, protocol.IsTxCommand(m))
	got, err := protocol.DecodeTxCommand(m)
	require.NoError(t, err)
	require.Equal(t, cmd, got)

	reply, err := protocol.EncodeTxReply(got, protocol.TxReply{Outcome: protocol.OutcomeVoteYes})
	require.NoError(t, err)
	r, err := protocol.DecodeReply(reply)
	require.NoError(t, err)
	require.Equal(t, "bank-a", r.Participant)
	require.EqualValues(t, protocol.KindPrepare, r.Kind)

	bad, err := protocol.EncodeTxReply(got, protocol.TxReply{Outcome: protocol.OutcomeAck})
	require.NoError(t, err)
	_, err = protocol.DecodeReply(bad)
	require.ErrorIs(t, err, protocol.ErrMalformed, "an ack does not answer a prepare")

	q, err := protocol.EncodeTxQuery(protocol.TxQuery{TxID: "tx-1", Participant: "bank-a"}, "1")
	require.NoError(t, err)
	gq, err := protocol.DecodeTxQuery(q)
	require.NoError(t, err)
	require.Equal(t, "tx-1", gq.TxID)
}

func TestParseCommandIDs(t *testing.T) {
	t.Parallel()
	for _, ref := range []protocol.CommandRef{
		{SagaID: "s", StepIndex: 3, Kind: protocol.KindCompensate, Attempt: 4},
		{TxID: "t", Participant: "bank-a", Kind: protocol.KindCommit, Attempt: 2},
	} {
		got, err := protocol.ParseCommandID(ref.ID())
		require.NoError(t, err)
		require.Equal(t, ref, got)
	}
	for _, bad := range []string{"", "saga:s:1:action", "saga:s:-1:action:1", "saga:s:1:bogus:1", "saga:s:1:action:0", "tx:s:1:action:1",
		"tx::p:prepare:1", "tx:t::prepare:1", "tx:t:p:bogus:1", "tx:t:p:commit:x", "saga::1:action:1", "other:s:1:action:1"} {
		_, err := protocol.ParseCommandID(bad)
		require.ErrorIs(t, err, protocol.ErrMalformed, bad)
	}
}

func TestCheckName(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"a", "bank-a", "Order.v2_x", strings.Repeat("n", protocol.MaxNameLength)} {
		require.NoError(t, protocol.CheckName(ok), ok)
	}
	for bad, want := range map[string]string{
		"":    "must not be empty",
		"-a":  "must start with a letter or digit",
		"a b": "may contain only",
		"a:b": "may contain only",
		strings.Repeat("n", protocol.MaxNameLength+1): "the limit is 128",
	} {
		err := protocol.CheckName(bad)
		require.Error(t, err, bad)
		require.Contains(t, err.Error(), want, bad)
	}
}

// FuzzDecoders feeds arbitrary bodies and ids to every decoder of outside input: none may panic,
// every error must be ErrMalformed, and what a decoder accepts keeps the protocol's rules: its
// JSON values pass CheckJSON, and its error text is within MaxErrorBytes.
func FuzzDecoders(f *testing.F) {
	good, _ := sampleCommand().Encode()
	f.Add(good.Type, good.MessageID, "", good.Body)
	f.Add(protocol.TypeReply, "", good.MessageID, []byte(`{"outcome":"succeeded","output":{}}`))
	f.Add(protocol.TypePrepare, "tx:t:p:prepare:1", "", []byte(`{"tx_id":"t","participant":"p","kind":"prepare","attempt":1}`))
	f.Add(protocol.TypeReply, "", "tx:t:p:commit:2", []byte(`{"outcome":"ack"}`))
	f.Add(protocol.TypeDecisionQuery, "", "", []byte(`{"tx_id":"t","participant":"p"}`))
	f.Add(protocol.TypeReply, "", good.MessageID, []byte("{\"outcome\":\"failed\",\"error\":\"\xff\"}"))
	f.Add(protocol.TypeReply, "", good.MessageID, []byte(`{"outcome":"succeeded","output":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`))
	f.Add(protocol.TypeReply, "", "tx:t:p\xff:prepare:1", []byte(`{"outcome":"vote_no","error":"x"}`))
	f.Add(protocol.TypeBundle, "bundle:2:a", "", []byte(`{"items":[{"message_id":"a","type":"reply","correlation_id":"c","body":{"outcome":"succeeded"}},{"type":"saga.action","headers":{"x":"y"},"body":[1,2]}]}`))
	f.Fuzz(func(t *testing.T, typ, id, corr string, body []byte) {
		m := protocol.Message{Type: typ, MessageID: id, CorrelationID: corr, Body: body, Headers: map[string]string{}}
		check := func(err error, values ...[]byte) {
			if err != nil && !errors.Is(err, protocol.ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			if err == nil && !utf8.Valid(m.Body) {
				t.Fatalf("accepted a body that is not UTF-8")
			}
			for _, v := range values {
				if err == nil && protocol.CheckJSON(v) != nil {
					t.Fatalf("accepted a value the JSON rule refuses: %v", protocol.CheckJSON(v))
				}
			}
		}
		if c, err := protocol.DecodeStepCommand(m); err != nil {
			check(err)
		} else {
			check(nil, c.Input, c.Output)
			for _, v := range c.Deps {
				check(nil, v)
			}
		}
		if r, err := protocol.DecodeReply(m); err != nil {
			check(err)
		} else {
			check(nil, r.Output)
			if len(r.Error) > protocol.MaxErrorBytes || !utf8.ValidString(r.Error) {
				t.Fatalf("accepted an error text of %d bytes, valid UTF-8 %v", len(r.Error), utf8.ValidString(r.Error))
			}
		}
		if c, err := protocol.DecodeTxCommand(m); err != nil {
			check(err)
		} else {
			check(nil, c.Payload)
		}
		_, err := protocol.DecodeTxQuery(m)
		check(err)
		_, err = protocol.DecodeFinal(m)
		check(err)
		checkBundle(t, m)
	})
}

// checkBundle decodes m as a bundle: a bundle accepted re-encodes to one that decodes to the
// same items.
func checkBundle(t *testing.T, m protocol.Message) {
	items, err := protocol.DecodeBundle(m)
	if err != nil {
		if !errors.Is(err, protocol.ErrMalformed) {
			t.Fatalf("bundle error %v is not ErrMalformed", err)
		}
		return
	}
	again, err := protocol.DecodeBundle(protocol.EncodeBundle(items))
	if err != nil {
		t.Fatalf("a decoded bundle does not decode once re-encoded: %v", err)
	}
	if len(again) != len(items) {
		t.Fatalf("re-encoded bundle has %d items, want %d", len(again), len(items))
	}
	for i := range items {
		if again[i].MessageID != items[i].MessageID || again[i].Type != items[i].Type || !bytes.Equal(again[i].Body, items[i].Body) {
			t.Fatalf("item %d changed in a round trip: %+v, want %+v", i, again[i], items[i])
		}
	}
}

func BenchmarkStepCommandEncodeDecode(b *testing.B) {
	cmd := sampleCommand()
	for b.Loop() {
		m, err := cmd.Encode()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := protocol.DecodeStepCommand(m); err != nil {
			b.Fatal(err)
		}
	}
}

// Values PostgreSQL cannot store are malformed at the door, so that no transaction keeps failing
// on them.
func TestDecodeRejectsWhatPostgreSQLCannotStore(t *testing.T) {
	t.Parallel()
	cmd := sampleCommand()
	for name, tc := range map[string]struct {
		reply protocol.StepReply
		ok    bool
	}{
		"NUL escape in output":     {protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: json.RawMessage(`{"a":"x\u0000"}`)}, false},
		"escaped backslash is ok":  {protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: json.RawMessage(`{"a":"x\\u0000"}`)}, true},
		"invalid UTF-8 in output":  {protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: json.RawMessage("{\"a\":\"\xff\"}")}, false},
		"NUL in error":             {protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: "a\x00b"}, false},
		"plain failure":            {protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: "out of stock"}, true},
		"three backslashes is NUL": {protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: json.RawMessage(`{"a":"\\\u0000"}`)}, false},
	} {
		m, err := protocol.EncodeStepReply(cmd, tc.reply)
		if err != nil {
			// json.Marshal refuses invalid JSON output itself; build the body by hand.
			m, err = protocol.EncodeStepReply(cmd, protocol.StepReply{Outcome: tc.reply.Outcome})
			require.NoError(t, err)
			m.Body = []byte(`{"outcome":"` + string(tc.reply.Outcome) + `","output":` + string(tc.reply.Output) + `}`)
		}
		_, err = protocol.DecodeReply(m)
		if tc.ok {
			require.NoError(t, err, name)
		} else {
			require.ErrorIs(t, err, protocol.ErrMalformed, name)
		}
	}
}

func TestDecodeTxCommandTimeout(t *testing.T) {
	t.Parallel()
	cmd := &protocol.TxCommand{TxID: "t1", Participant: "bank-a", Kind: protocol.KindPrepare, Attempt: 1, TimeoutMillis: 2000}
	m, err := cmd.Encode()
	require.NoError(t, err)
	got, err := protocol.DecodeTxCommand(m)
	require.NoError(t, err)
	require.Equal(t, 2*time.Second, got.Timeout())

	m.Body = []byte(`{"tx_id":"t1","participant":"bank-a","kind":"prepare","attempt":1,"timeout_ms":-5}`)
	_, err = protocol.DecodeTxCommand(m)
	require.ErrorIs(t, err, protocol.ErrMalformed)
	require.Contains(t, err.Error(), "timeout_ms -5 is negative")
}

func TestFinalRoundTrip(t *testing.T) {
	t.Parallel()
	f := &protocol.Final{Sagas: []string{"3f1c2a7e-0000-4000-8000-000000000001"}, Transactions: []string{"3f1c2a7e-0000-4000-8000-000000000002"}}
	m, err := f.Encode("bank-a", "7")
	require.NoError(t, err)
	require.Equal(t, protocol.TypeFinal, m.Type)
	require.Equal(t, "final:bank-a:7", m.MessageID)
	got, err := protocol.DecodeFinal(m)
	require.NoError(t, err)
	require.Equal(t, f, got)

	m.Body = []byte(`{"sagas":["not-a-uuid"]}`)
	_, err = protocol.DecodeFinal(m)
	require.ErrorIs(t, err, protocol.ErrMalformed)
	require.Contains(t, err.Error(), `sagas[0] "not-a-uuid"`)
	many := &protocol.Final{Sagas: make([]string, protocol.MaxFinalIDs+1)}
	for i := range many.Sagas {
		many.Sagas[i] = "3f1c2a7e-0000-4000-8000-000000000001"
	}
	m, err = many.Encode("bank-a", "8")
	require.NoError(t, err)
	_, err = protocol.DecodeFinal(m)
	require.ErrorIs(t, err, protocol.ErrMalformed)
}

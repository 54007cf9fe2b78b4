package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sagacoord/sagacoord/protocol"
)

// Payloads of the test contract: a PREPARE votes as its payload's "vote" says.
var (
	voteYes = json.RawMessage(`{"vote":"yes"}`)
	voteNo  = json.RawMessage(`{"vote":"no"}`)
)

// txCommand is a two-phase-commit command for the worker under test.
func (k *kit) txCommand(txID string, kind protocol.Kind, payload json.RawMessage) *protocol.TxCommand {
	c := &protocol.TxCommand{TxID: txID, Participant: k.cfg.Participant, Kind: kind, Attempt: 1, Payload: payload}
	if kind == protocol.KindPrepare {
		c.TimeoutMillis = k.cfg.CaseTimeout.Milliseconds()
	}
	return c
}

// sendTx publishes cmd to the worker's 2PC queue and returns the outcome of its reply, checked
// against twopc.md §7.
func (k *kit) sendTx(ctx context.Context, cmd *protocol.TxCommand) (protocol.TxReply, error) {
	m, err := cmd.Encode()
	if err != nil {
		return protocol.TxReply{}, err
	}
	if err := k.publish(ctx, m, protocol.TwoPCRoutingKey(k.cfg.Participant)); err != nil {
		return protocol.TxReply{}, err
	}
	d, err := k.reply(ctx, m.MessageID)
	if err != nil {
		return protocol.TxReply{}, err
	}
	if err := checkReplyEnvelope(d, m.MessageID); err != nil {
		return protocol.TxReply{}, err
	}
	var r protocol.TxReply
	if err := json.Unmarshal(d.Body, &r); err != nil || !r.Outcome.Answers(cmd.Kind) {
		return r, fmt.Errorf("reply to %s: body %s does not answer a %s", m.MessageID, d.Body, cmd.Kind)
	}
	return r, nil
}

// expectTx sends each command in turn and checks its outcome.
func (k *kit) expectTx(ctx context.Context, steps ...txStep) error {
	for _, s := range steps {
		r, err := k.sendTx(ctx, s.cmd)
		if err != nil {
			return err
		}
		if r.Outcome != s.want {
			return fmt.Errorf("%s: outcome %q (error %q), want %q", s.what, r.Outcome, r.Error, s.want)
		}
	}
	return nil
}

type txStep struct {
	what string
	cmd  *protocol.TxCommand
	want protocol.Outcome
}

func twoPCCommit(ctx context.Context, k *kit) (string, error) {
	tx := uuid.NewString()
	err := k.expectTx(ctx,
		txStep{"PREPARE with vote yes", k.txCommand(tx, protocol.KindPrepare, voteYes), protocol.OutcomeVoteYes},
		txStep{"duplicate PREPARE", k.txCommand(tx, protocol.KindPrepare, voteYes), protocol.OutcomeVoteYes},
		txStep{"COMMIT after YES", k.txCommand(tx, protocol.KindCommit, voteYes), protocol.OutcomeAck},
	)
	if err != nil {
		return "", err
	}
	return "PREPARE voted yes (its duplicate too), COMMIT acknowledged", nil
}

func twoPCAbort(ctx context.Context, k *kit) (string, error) {
	yes, no := uuid.NewString(), uuid.NewString()
	err := k.expectTx(ctx,
		txStep{"PREPARE with vote yes", k.txCommand(yes, protocol.KindPrepare, voteYes), protocol.OutcomeVoteYes},
		txStep{"ABORT after YES", k.txCommand(yes, protocol.KindAbort, voteYes), protocol.OutcomeAck},
		txStep{"PREPARE with vote no", k.txCommand(no, protocol.KindPrepare, voteNo), protocol.OutcomeVoteNo},
		txStep{"ABORT after NO", k.txCommand(no, protocol.KindAbort, voteNo), protocol.OutcomeAck},
	)
	if err != nil {
		return "", err
	}
	return "ABORT acknowledged after a YES and after a NO", nil
}

func twoPCAbortFirst(ctx context.Context, k *kit) (string, error) {
	tx := uuid.NewString()
	if err := k.expectTx(ctx, txStep{"ABORT before its PREPARE", k.txCommand(tx, protocol.KindAbort, voteYes), protocol.OutcomeAck}); err != nil {
		return "", err
	}
	r, err := k.sendTx(ctx, k.txCommand(tx, protocol.KindPrepare, voteYes))
	if err != nil {
		return "", err
	}
	if r.Outcome != protocol.OutcomeVoteNo || r.Error != "aborted before prepare" {
		return "", fmt.Errorf("late PREPARE after its ABORT: outcome %q error %q, want vote_no \"aborted before prepare\"", r.Outcome, r.Error)
	}
	return "ABORT first acknowledged; the late PREPARE, though its payload says yes, voted no", nil
}

func twoPCDecisionQuery(ctx context.Context, k *kit) (string, error) {
	tx := uuid.NewString()
	if err := k.expectTx(ctx, txStep{"PREPARE with vote yes", k.txCommand(tx, protocol.KindPrepare, voteYes), protocol.OutcomeVoteYes}); err != nil {
		return "", err
	}
	d, err := k.await(ctx, &k.replies, func(d amqp.Delivery) bool {
		return d.Type == protocol.TypeDecisionQuery && strings.HasPrefix(d.MessageId, "query:"+tx+":")
	})
	if err != nil {
		return "", fmt.Errorf("prepared and left without a decision, the worker sent no %s for %s within %s", protocol.TypeDecisionQuery, tx, k.cfg.QueryTimeout)
	}
	var q protocol.TxQuery
	if err := json.Unmarshal(d.Body, &q); err != nil || q.TxID != tx || q.Participant != k.cfg.Participant {
		return "", fmt.Errorf("decision query %s has body %s, want {\"tx_id\":%q,\"participant\":%q}", d.MessageId, d.Body, tx, k.cfg.Participant)
	}
	if d.RoutingKey != protocol.RoutingKeyReplies || d.DeliveryMode != amqp.Persistent {
		return "", fmt.Errorf("decision query %s: routing key %q, delivery_mode %d; want %q, 2", d.MessageId, d.RoutingKey, d.DeliveryMode, protocol.RoutingKeyReplies)
	}
	// The answer to a query is the decision itself, as a coordinator sends it.
	if err := k.expectTx(ctx, txStep{"COMMIT answering the query", k.txCommand(tx, protocol.KindCommit, nil), protocol.OutcomeAck}); err != nil {
		return "", err
	}
	return "prepared and left silent, the worker asked for the decision; the COMMIT sent as the answer was acknowledged", nil
}

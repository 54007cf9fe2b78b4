package participant_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/sandbox"
	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

// permission is one `rabbitmqctl set_permissions` line: its configure, write and read
// expressions.
type permission struct{ configure, write, read string }

// securityDocPermissions returns the set_permissions lines of docs/security.md, by user.
func securityDocPermissions(t *testing.T) map[string]permission {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "docs", "security.md"))
	require.NoError(t, err)
	defer f.Close()
	perms := map[string]permission{}
	sc := bufio.NewScanner(f)
	line := ""
	for sc.Scan() {
		if part, ok := strings.CutSuffix(sc.Text(), `\`); ok {
			line += part
			continue
		}
		line += sc.Text()
		if args := shellWords(line); len(args) == 8 && args[0] == "rabbitmqctl" && args[1] == "set_permissions" && args[2] == "-p" {
			perms[args[4]] = permission{args[5], args[6], args[7]}
		}
		line = ""
	}
	require.NoError(t, sc.Err())
	return perms
}

// shellWords splits a line into words as a shell would, for the quoting the docs use: blanks
// separate words, single quotes keep everything inside them.
func shellWords(line string) []string {
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case r == '\'':
			quoted, inWord = !quoted, true
		case !quoted && (r == ' ' || r == '\t'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
			}
			inWord = false
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// brokerUser creates the user of docs/security.md named docUser, with that page's permissions,
// on the vhost of vhostURL, and returns its URL and a transport connected as that user.
func brokerUser(t *testing.T, vhostURL string, perms map[string]permission, docUser string) (string, *amqptransport.Transport) {
	t.Helper()
	p, ok := perms[docUser]
	require.True(t, ok, "docs/security.md sets no permissions for %s", docUser)
	u := testenv.RabbitUser(t, vhostURL, testenv.Name("lp-")+"-"+docUser, p.configure, p.write, p.read)
	tr, err := amqptransport.New(t.Context(), amqptransport.Config{URL: u, ConnectionName: "least-privilege " + docUser})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	return u, tr
}

// requireRefused checks that err is the broker's 403 ACCESS_REFUSED.
func requireRefused(t *testing.T, err error, what string) {
	t.Helper()
	require.Error(t, err, what)
	t.Logf("%s: %v", what, err)
	var amqpErr *amqp.Error
	if errors.As(err, &amqpErr) {
		require.Equal(t, amqp.AccessRefused, amqpErr.Code, "%s: %v", what, err)
		return
	}
	require.Contains(t, err.Error(), "ACCESS_REFUSED", what)
}

// TestLeastPrivilegeLayout applies the permissions of docs/security.md, as written there, on a
// vhost of its own: the coordinator's user declares the topology and both participants' queues;
// bank-a's worker, whose user may only read its queue, publish replies and bind its queue to the
// final notices, starts with SkipDeclare, answers a command and records a final notice; and every
// other use of the broker by either user is refused.
func TestLeastPrivilegeLayout(t *testing.T) {
	t.Parallel()
	perms := securityDocPermissions(t)
	// The sandbox's layout, which the TLS tests and make demo-tls use, is the page's.
	for user, want := range map[string]sandbox.Permission{
		"sagacoord-coordinator": sandbox.CoordinatorPermission("sagacoord-coordinator", "sagacoord"),
		"bank-a":                sandbox.ParticipantPermission("bank-a", "sagacoord", "bank-a"),
		"bank-b":                sandbox.ParticipantPermission("bank-b", "sagacoord", "bank-b"),
	} {
		require.Equal(t, permission{want.Configure, want.Write, want.Read}, perms[user], "sandbox's permission of %s", user)
	}
	e := newEnv(t) // the schema, the effects table and a vhost; its guest transports stay unused
	vhostURL := testenv.VHost(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	_, coord := brokerUser(t, vhostURL, perms, "sagacoord-coordinator")
	require.NoError(t, coord.DeclareTopology(ctx), "the coordinator declares the topology")
	require.NoError(t, coord.DeclareParticipant(ctx, "bank-a"))
	require.NoError(t, coord.DeclareParticipant(ctx, "bank-b"))
	replies, err := coord.Consume(ctx, protocol.QueueReplies, 8)
	require.NoError(t, err, "the coordinator consumes replies")

	bankAURL, bankA := brokerUser(t, vhostURL, perms, "bank-a")
	cfg := e.config()
	cfg.Transport = bankA
	w, err := participant.New(cfg)
	require.NoError(t, err)
	h := &counter{out: `{"balance":95}`}
	w.Handle("debit", h.handle)
	require.NoError(t, w.Migrate(ctx))
	err = w.Start(ctx)
	requireRefused(t, err, "a worker that declares, under a user that may not")
	require.ErrorContains(t, err, "SkipDeclare", "the error says what to do")

	cfg.SkipDeclare = true
	e.start(cfg, map[string]participant.Handler{"debit": h.handle})
	saga := uuid.NewString()
	msg, err := debit(saga).Encode()
	require.NoError(t, err)
	require.NoError(t, errors.Join(coord.Publish(ctx, []transport.Outgoing{{Exchange: protocol.ExchangeCommands, RoutingKey: name, Message: msg}})...),
		"the coordinator publishes commands")
	select {
	case d := <-replies:
		require.NoError(t, d.Ack())
		r, err := protocol.DecodeReply(d.Message)
		require.NoError(t, err)
		require.Equal(t, saga, r.SagaID)
		require.EqualValues(t, protocol.OutcomeSucceeded, r.Outcome, "bank-a consumed its queue and published the reply")
	case <-ctx.Done():
		t.Fatal("no reply from the least-privilege worker")
	}
	notice, err := (&protocol.Final{Sagas: []string{saga}}).Encode(name, uuid.NewString())
	require.NoError(t, err)
	require.NoError(t, errors.Join(coord.Publish(ctx, []transport.Outgoing{{Exchange: protocol.ExchangeFinals, RoutingKey: name, Message: notice}})...),
		"the coordinator publishes final notices")
	require.Eventually(t, func() bool { return e.count(`SELECT count(*) FROM finals WHERE gid = $1`, saga) == 1 }, waitFor, 10*time.Millisecond,
		"bank-a bound its queue to the final notices and recorded the coordinator's")

	missing, err := participant.New(participant.Config{Name: "bank-c", Transport: bankA, DB: e.pool, Schema: e.schema, SkipDeclare: true})
	require.NoError(t, err)
	require.ErrorContains(t, missing.Start(ctx), "register a saga definition that names participant bank-c")

	requireParticipantRefusals(t, ctx, bankAURL, bankA)
	reply := transport.Outgoing{Exchange: protocol.ExchangeReplies, RoutingKey: protocol.RoutingKeyReplies, Message: msg}
	requireRefused(t, errors.Join(coord.Publish(ctx, []transport.Outgoing{reply})...), "the coordinator publishes a reply")
}

// requireParticipantRefusals checks what bank-a's user may not do: read bank-b's queues, publish a
// command, declare, or bind its queue to bank-b's commands or to the replies.
func requireParticipantRefusals(t *testing.T, ctx context.Context, bankAURL string, bankA *amqptransport.Transport) {
	t.Helper()
	_, err := bankA.Consume(ctx, protocol.ParticipantQueue("bank-b"), 1)
	requireRefused(t, err, "bank-a consumes bank-b's queue")
	_, err = bankA.Consume(ctx, protocol.TwoPCQueue("bank-b"), 1)
	requireRefused(t, err, "bank-a consumes bank-b's two-phase-commit queue")
	msg, err := debit("lp-2").Encode()
	require.NoError(t, err)
	cmd := transport.Outgoing{Exchange: protocol.ExchangeCommands, RoutingKey: "bank-b", Message: msg}
	requireRefused(t, errors.Join(bankA.Publish(ctx, []transport.Outgoing{cmd})...), "bank-a publishes a command")
	requireRefused(t, bankA.DeclareParticipant(ctx, "bank-a"), "bank-a declares its queue")
	requireRefused(t, bankA.DeclareTopology(ctx), "bank-a declares the topology")

	// Binding is the one thing the transport never does: try it with amqp091-go directly.
	conn, err := amqp.Dial(bankAURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	requireRefused(t, ch.QueueBind(protocol.ParticipantQueue("bank-a"), "bank-b", protocol.ExchangeCommands, false, nil),
		"bank-a binds its queue to bank-b's commands")
	ch, err = conn.Channel()
	require.NoError(t, err)
	requireRefused(t, ch.QueueBind(protocol.ParticipantQueue("bank-a"), protocol.RoutingKeyReplies, protocol.ExchangeReplies, false, nil),
		"bank-a binds its queue to the replies")
}

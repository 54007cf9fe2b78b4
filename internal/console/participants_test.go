package console_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/console"
	"github.com/sagacoord/sagacoord/internal/engine"
	"github.com/sagacoord/sagacoord/twopc"
)

// field returns the number in the participant's row's cell data-field="name".
func field(t *testing.T, body, participant, name string) int {
	t.Helper()
	row := regexp.MustCompile(`(?s)<tr data-participant="` + participant + `">.*?</tr>`).FindString(body)
	require.NotEmpty(t, row, "no row of %s:\n%s", participant, body)
	m := regexp.MustCompile(`data-field="` + name + `">(\d+)<`).FindStringSubmatch(row)
	require.NotNil(t, m, "no %s in the row of %s: %s", name, participant, row)
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return n
}

// A reader sees each participant's queues as the real broker reports them (the step queue has
// the worker as its consumer) and the coordinator's figures: a failed step, the steps started,
// and a transaction in doubt waiting for the participant's vote; the management API's password
// is never on the page.
func TestParticipantsShowQueuesAndTheCoordinatorsFigures(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.failedSaga()
	// bank has no two-phase-commit handlers: the transaction waits for its vote.
	tx, _, err := e.coord.Engine().BeginTransaction(e.ctx, engine.BeginRequest{PrepareTimeout: 10 * time.Minute,
		Participants: []twopc.Participant{{Name: "bank", Payload: json.RawMessage(`{}`)}}})
	require.NoError(t, err)
	c := e.login(e.client(), readerToken)

	// The management API refreshes its figures every few seconds.
	var body string
	deadline := time.Now().Add(30 * time.Second)
	for {
		var code int
		code, body = e.get(c, "/participants")
		require.Equal(t, http.StatusOK, code)
		if field(t, body, "bank", "consumers") == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.NotContains(t, body, "broker-error", "the management API answers")
	require.NotContains(t, body, "guest", "the management API's credentials are on the page")
	require.Equal(t, 1, field(t, body, "bank", "consumers"), "the worker consumes its step queue")
	require.Equal(t, 0, field(t, body, "bank", "ready"))
	require.Equal(t, 1, field(t, body, "bank", "failed"), "debit failed")
	require.Equal(t, 2, field(t, body, "bank", "started"), "reserve and debit started")
	require.Equal(t, 0, field(t, body, "bank", "in-flight"))
	require.Equal(t, 1, field(t, body, "bank", "in-doubt"))

	code, body := e.get(c, "/participants/bank")
	require.Equal(t, http.StatusOK, code)
	contains(t, body, "sagacoord.participant.bank", "/transactions/"+tx.ID.String(), "No step of this participant is in flight.")
	code, _ = e.get(c, "/participants/nosuch")
	require.Equal(t, http.StatusNotFound, code)
}

// When the management API is not configured, refuses the credentials, or does not answer, the
// page says so and still shows the coordinator's figures; it never shows the password.
func TestParticipantsWithoutTheManagementAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.failedSaga()
	for _, tt := range []struct{ api, says string }{
		{"", "not configured"},
		{"http://guest:s3cr3t-pw@127.0.0.1:15672", "answered 401"},
		{"http://guest:s3cr3t-pw@127.0.0.1:1", "does not answer"},
		{"ftp://guest:s3cr3t-pw@127.0.0.1:1", "want http(s)://"},
	} {
		e.serveConsole(console.Config{RabbitAPI: tt.api, VHost: "/"})
		code, body := e.get(e.client(), "/participants")
		require.Equal(t, http.StatusOK, code, tt.api)
		m := regexp.MustCompile(`id="broker-error" role="status">([^<]*)<`).FindStringSubmatch(body)
		require.NotNil(t, m, "%s: the page does not say why the queues are missing", tt.api)
		require.Contains(t, m[1], tt.says, tt.api)
		require.NotContains(t, body, "s3cr3t-pw", tt.api)
		require.Equal(t, 1, field(t, body, "bank", "failed"), tt.api)
		require.True(t, strings.Contains(body, `<a href="/participants/bank">bank</a>`), tt.api)
	}
}

// The vhost of an AMQP URL, as the management API names it.
func TestVHostOf(t *testing.T) {
	for in, want := range map[string]string{
		"amqp://guest:guest@127.0.0.1:5672/": "/", "amqp://h": "/", "amqp://h/prod": "prod", "amqps://h/a%2Fb": "a/b",
	} {
		require.Equal(t, want, console.VHostOf(in), in)
	}
}

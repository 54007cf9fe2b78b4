package cli

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

// maxPageSize is the server's largest page (ListSagasRequest.page_size).
const maxPageSize = 1000

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func newSagaCommand(app *App) *cobra.Command {
	return groupCommand("saga", "Start, inspect and steer sagas",
		newSagaStartCommand(app),
		newSagaGetCommand(app),
		newSagaListCommand(app),
		newSagaWatchCommand(app),
		newSagaAbortCommand(app),
		newSagaRetryCommand(app),
	)
}

// newUUID returns a random (version 4) UUID.
func newUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate saga id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// sagaStartFlags are the flags of `saga start`.
type sagaStartFlags struct {
	id, input, inputFile string
	version              int32
	deadline             time.Duration
	wait                 bool
}

func newSagaStartCommand(app *App) *cobra.Command {
	var f sagaStartFlags
	c := &cobra.Command{
		Use:   "start DEFINITION [--id UUID] [--input JSON | --input-file FILE] [--version N] [--deadline DUR] [--wait]",
		Short: "Start a saga",
		Long: `Start a saga of a registered definition (its latest version unless --version).

The call is idempotent on the saga id: starting again with the same --id and the same request
returns the existing saga, a different request with that id fails with AlreadyExists. Without
--id sagactl generates one and prints it, so a start whose answer was lost (a timeout) can be
repeated safely with --id.

--input is the saga input as JSON; --input-file reads it from a file (- for standard input).
--deadline overrides the definition's deadline.

With --wait, sagactl then follows the saga like 'saga watch' and exits 0 if it COMPLETED,
3 if it COMPENSATED, 4 if it FAILED. -o json prints the server's answer
{"saga": {...}, "created": ...}, or with --wait the final saga.`,
		Args: exactArgs("DEFINITION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := f.request(cmd, app, args[0])
			if err != nil {
				return err
			}
			return startSaga(cmd, app, req, f.wait)
		},
	}
	fs := c.Flags()
	fs.StringVar(&f.id, "id", "", "saga id (UUID); makes the start idempotent (default: a new random UUID)")
	fs.StringVar(&f.input, "input", "", "saga input as JSON")
	fs.StringVar(&f.inputFile, "input-file", "", "file with the saga input as JSON (- for standard input)")
	fs.Int32Var(&f.version, "version", 0, "definition version (default: the latest)")
	fs.DurationVar(&f.deadline, "deadline", 0, "deadline of this saga, overriding the definition's (e.g. 5m)")
	fs.BoolVar(&f.wait, "wait", false, "follow the saga until it ends; exit 0 COMPLETED, 3 COMPENSATED, 4 FAILED")
	return c
}

// request checks the flags and builds the StartSaga request, with a new saga id when --id is
// not given.
func (f *sagaStartFlags) request(cmd *cobra.Command, app *App, definition string) (*sagacoordv1.StartSagaRequest, error) {
	req := &sagacoordv1.StartSagaRequest{Definition: definition, DefinitionVersion: f.version}
	if f.version < 0 {
		return nil, flagError("invalid --version %d: must be positive (or 0 for the latest)", f.version)
	}
	if flagChanged(cmd.Flags(), "deadline") {
		if f.deadline <= 0 {
			return nil, flagError("invalid --deadline %s: must be positive", f.deadline)
		}
		req.Deadline = durationpb.New(f.deadline)
	}
	if f.input != "" && f.inputFile != "" {
		return nil, flagError("give --input or --input-file, not both")
	}
	raw := []byte(f.input)
	name := "--input"
	if f.inputFile != "" {
		var err error
		if raw, err = app.readInput(f.inputFile); err != nil {
			return nil, err
		}
		name = f.inputFile
	}
	if len(strings.TrimSpace(string(raw))) > 0 {
		if !json.Valid(raw) {
			var v any
			err := json.Unmarshal(raw, &v)
			return nil, &ExitError{Code: ExitUsage, Err: fmt.Errorf("%s: the saga input must be JSON: %v", name, err)}
		}
		req.Input = raw
	}
	switch {
	case f.id == "":
		id, err := newUUID()
		if err != nil {
			return nil, err
		}
		req.SagaId = id
	case !uuidPattern.MatchString(f.id):
		return nil, flagError("invalid --id %q: want a UUID such as 123e4567-e89b-12d3-a456-426614174000", f.id)
	default:
		req.SagaId = f.id
	}
	return req, nil
}

// startSaga sends the request, prints the answer and, with wait, follows the saga to its end.
func startSaga(cmd *cobra.Command, app *App, req *sagacoordv1.StartSagaRequest, wait bool) error {
	client, err := app.sagaClient()
	if err != nil {
		return err
	}
	ctx, cancel := app.CallContext(cmd.Context())
	defer cancel()
	resp, err := client.StartSaga(ctx, req)
	if err != nil {
		err = app.RPCError(ctx, err)
		if indeterminate(err) {
			// The saga may have started: say how to find out or repeat safely.
			id := req.GetSagaId()
			err = fmt.Errorf("%w (saga id %s: 'sagactl saga get %s' tells whether it started; repeating with --id %s is safe)", err, id, id, id)
		}
		return err
	}
	saga := resp.GetSaga()
	if app.JSON() && !wait {
		return writeJSON(app.Stdout(), resp)
	}
	if !app.JSON() {
		verb := "started"
		if !resp.GetCreated() {
			verb = "already started (same request)"
		}
		if _, err := fmt.Fprintf(app.Stdout(), "saga %s %s: %s version %d, %s\n", saga.GetId(), verb,
			saga.GetDefinition(), saga.GetDefinitionVersion(), sagaStatusName(saga.GetStatus())); err != nil {
			return err
		}
	}
	if !wait {
		return nil
	}
	mode := watchLines
	if app.JSON() {
		mode = watchFinal
	}
	return watchSaga(cmd.Context(), app, saga.GetId(), mode)
}

func newSagaGetCommand(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a saga and its steps",
		Long: `Show a saga: its header, then one row per step with the participant, status, action
attempts, compensation attempts, duration and last error. A pivot step is marked in the
PIVOT column. Then the audit trail: each abort and retry with its time, the caller's
identity and the reason. -o json prints the saga message (the trail is its "audit").`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := app.sagaClient()
			if err != nil {
				return err
			}
			ctx, cancel := app.CallContext(cmd.Context())
			defer cancel()
			resp, err := client.GetSaga(ctx, &sagacoordv1.GetSagaRequest{SagaId: args[0]})
			if err != nil {
				return app.RPCError(ctx, err)
			}
			if app.JSON() {
				return writeJSON(app.Stdout(), resp.GetSaga())
			}
			return printSaga(app.Stdout(), resp.GetSaga(), app.opts.Now())
		},
	}
}

// printSaga prints the header as "KEY: value" lines, then the steps table.
func printSaga(w io.Writer, s *sagacoordv1.Saga, now time.Time) error {
	h := newTable(w)
	field := func(k, v string) {
		if v != "" {
			h.row(k+":", v)
		}
	}
	field("ID", s.GetId())
	field("DEFINITION", fmt.Sprintf("%s version %d", s.GetDefinition(), s.GetDefinitionVersion()))
	field("STATUS", sagaStatusName(s.GetStatus()))
	field("REASON", s.GetReason())
	field("CREATED", formatTS(s.GetCreatedAt()))
	field("UPDATED", formatTS(s.GetUpdatedAt()))
	field("FINISHED", formatTS(s.GetFinishedAt()))
	field("DEADLINE", formatTS(s.GetDeadline()))
	field("VERSION", fmt.Sprint(s.GetVersion()))
	field("INPUT", string(s.GetInput()))
	if err := h.flush(); err != nil {
		return err
	}
	if len(s.GetSteps()) > 0 {
		if _, err := fmt.Fprintln(w); err != nil {
			return err
		}
		t := newTable(w, "STEP", "PARTICIPANT", "STATUS", "ATTEMPT", "COMP ATTEMPT", "PIVOT", "DURATION", "LAST ERROR")
		for _, st := range s.GetSteps() {
			pivot := ""
			if st.GetPivot() {
				pivot = "yes"
			}
			t.row(st.GetName(), st.GetParticipant(), stepStatusName(st.GetStatus()),
				fmt.Sprint(st.GetAttempt()), fmt.Sprint(st.GetCompensationAttempt()), pivot,
				stepDuration(st, now), st.GetLastError())
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	return printAudit(w, s.GetAudit())
}

// printAudit prints the operators' calls that changed the saga, oldest first.
func printAudit(w io.Writer, audit []*sagacoordv1.AuditEntry) error {
	if len(audit) == 0 {
		return nil
	}
	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	t := newTable(w, "AUDIT AT", "ACTION", "BY", "REASON")
	for _, a := range audit {
		t.row(formatTS(a.GetAt()), a.GetAction(), a.GetBy(), a.GetReason())
	}
	return t.flush()
}

// stepDuration is finished - started, or the time so far with a "+" for a step still running.
func stepDuration(st *sagacoordv1.Step, now time.Time) string {
	if st.GetStartedAt() == nil {
		return ""
	}
	start := st.GetStartedAt().AsTime()
	if st.GetFinishedAt() != nil {
		return formatElapsed(st.GetFinishedAt().AsTime().Sub(start))
	}
	if d := formatElapsed(now.Sub(start)); d != "" {
		return d + "+"
	}
	return ""
}

func newSagaListCommand(app *App) *cobra.Command {
	var (
		statusFlag, definition, pageToken string
		limit                             int
		all                               bool
	)
	c := &cobra.Command{
		Use:   "list [--status S] [--definition D] [--limit N] [--all]",
		Short: "List sagas, newest first",
		Long: `List sagas newest first, at most --limit of them (default 50). With --all, sagactl follows
the server's page tokens (pages of --limit) until every matching saga is printed. When more
sagas remain, the command to fetch the next page is printed on stderr.

--status takes RUNNING, COMPLETED, COMPENSATING, COMPENSATED or FAILED (any case; the
SAGA_STATUS_ prefix is optional). -o json prints one JSON array of sagas (without steps).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &sagacoordv1.ListSagasRequest{Definition: definition, PageToken: pageToken}
			if statusFlag != "" {
				st, err := parseSagaStatus("--status", statusFlag)
				if err != nil {
					return err
				}
				req.Status = st
			}
			if limit <= 0 {
				return flagError("invalid --limit %d: must be positive", limit)
			}
			client, err := app.sagaClient()
			if err != nil {
				return err
			}
			var sagas []*sagacoordv1.Saga
			next, err := followPages(cmd.Context(), app, "", pageToken, limit, all, func(ctx context.Context, size int32, token string) (string, int, error) {
				req.PageSize, req.PageToken = size, token
				resp, err := client.ListSagas(ctx, req)
				if err != nil {
					return "", 0, err
				}
				sagas = append(sagas, resp.GetSagas()...)
				return resp.GetNextPageToken(), len(sagas), nil
			})
			if err != nil {
				return err
			}
			if !all && len(sagas) > limit {
				sagas = sagas[:limit]
			}
			if app.JSON() {
				err = writeJSONArray(app.Stdout(), sagas)
			} else {
				t := newTable(app.Stdout(), "ID", "DEFINITION", "VERSION", "STATUS", "CREATED", "UPDATED", "REASON")
				for _, s := range sagas {
					t.row(s.GetId(), s.GetDefinition(), fmt.Sprint(s.GetDefinitionVersion()), sagaStatusName(s.GetStatus()),
						formatTS(s.GetCreatedAt()), formatTS(s.GetUpdatedAt()), s.GetReason())
				}
				err = t.flush()
			}
			if err == nil && next != "" {
				fmt.Fprintf(app.Stderr(), "more sagas: repeat with --page-token %s, or use --all\n", next)
			}
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&statusFlag, "status", "", "only sagas in this status")
	f.StringVar(&definition, "definition", "", "only sagas of this definition")
	f.IntVar(&limit, "limit", 50, "at most this many sagas; with --all, the page size")
	f.BoolVar(&all, "all", false, "follow page tokens until every saga is listed")
	f.StringVar(&pageToken, "page-token", "", "continue a listing where a previous one stopped")
	return c
}

// followPages calls fetch with a page size and token until the token runs out or, without all,
// until limit items are in. fetch returns the next token and the number of items collected so far.
// followPages returns the token of the first page not fetched ("" when none is left).
func followPages(ctx context.Context, app *App, service, token string, limit int, all bool, fetch func(context.Context, int32, string) (string, int, error)) (string, error) {
	total := 0
	for {
		size := limit
		if !all {
			size = limit - total
		}
		size = min(size, maxPageSize)
		callCtx, cancel := app.CallContext(ctx)
		next, n, err := fetch(callCtx, int32(size), token)
		if err != nil {
			err = app.rpcErrorOf(callCtx, service, err)
		}
		cancel()
		if err != nil {
			return "", err
		}
		total = n
		if next == "" || (!all && total >= limit) {
			return next, nil
		}
		if next == token {
			return "", &ExitError{Code: ExitServer, Err: fmt.Errorf("the server returned page token %q twice; stopping", next)}
		}
		token = next
	}
}

package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

// transactionFileHelp documents the file of `tx begin`; transactionFile is the format.
const transactionFileHelp = `A transaction file is YAML or JSON, like a definition file:

  id: 123e4567-e89b-12d3-a456-426614174000  # optional; default: a new random UUID
  prepare_timeout: 10s                      # optional (default 10s)
  participants:                             # required
    - name: bank-a                          # the participant queue that gets PREPARE
      payload: {account: A, amount: -10}    # optional: any value, sent as JSON
    - name: bank-b
      payload: {account: B, amount: 10}`

type transactionFile struct {
	ID             string            `json:"id,omitempty"`
	PrepareTimeout durationString    `json:"prepare_timeout,omitempty"`
	Participants   []participantFile `json:"participants"`
}

type participantFile struct {
	Name    string          `json:"name"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// ParseTransaction parses a transaction file (see transactionFileHelp) into the request
// BeginTransaction takes. Like ParseDefinition it checks the format, not the content.
func ParseTransaction(name string, data []byte) (*sagacoordv1.BeginTransactionRequest, error) {
	var f transactionFile
	loc, err := decodeFile(name, data, &f)
	if err != nil {
		return nil, err
	}
	req := &sagacoordv1.BeginTransactionRequest{TransactionId: f.ID}
	if f.ID != "" && !uuidPattern.MatchString(f.ID) {
		return nil, loc.errorf("id", "invalid id %q: want a UUID such as 123e4567-e89b-12d3-a456-426614174000", f.ID)
	}
	if req.PrepareTimeout, err = durationField(loc, "prepare_timeout", f.PrepareTimeout); err != nil {
		return nil, err
	}
	for i, p := range f.Participants {
		tp := &sagacoordv1.TransactionParticipant{Name: p.Name}
		if len(p.Payload) > 0 && string(p.Payload) != "null" {
			if !json.Valid(p.Payload) {
				return nil, loc.errorf("participants."+strconv.Itoa(i)+".payload", "payload is not valid JSON")
			}
			tp.Payload = p.Payload
		}
		req.Participants = append(req.Participants, tp)
	}
	return req, nil
}

// txService names the service in the message for a coordinator that lacks it.
const txService = "TwoPCService (two-phase commit)"

func newTxCommand(app *App) *cobra.Command {
	return groupCommand("tx", "Begin and inspect two-phase-commit transactions",
		newTxBeginCommand(app),
		newTxGetCommand(app),
		newTxListCommand(app),
		newTxWatchCommand(app),
	)
}

func newTxBeginCommand(app *App) *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "begin -f FILE",
		Short: "Begin a two-phase-commit transaction from a YAML or JSON file",
		Long: `Begin a transaction: the coordinator sends PREPARE to every participant. The call is
idempotent on the transaction id; without an id in the file sagactl generates one and prints
it. -o json prints the server's answer {"transaction": {...}, "created": ...}.

` + transactionFileHelp,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return flagError("-f FILE is required")
			}
			data, err := app.readInput(file)
			if err != nil {
				return err
			}
			req, err := ParseTransaction(file, data)
			if err != nil {
				return &ExitError{Code: ExitUsage, Err: err}
			}
			if req.TransactionId == "" {
				if req.TransactionId, err = newUUID(); err != nil {
					return err
				}
			}
			client, err := app.txClient()
			if err != nil {
				return err
			}
			ctx, cancel := app.CallContext(cmd.Context())
			defer cancel()
			resp, err := client.BeginTransaction(ctx, req)
			if err != nil {
				err = app.rpcErrorOf(ctx, txService, err)
				if indeterminate(err) {
					id := req.TransactionId
					err = fmt.Errorf("%w (transaction id %s: 'sagactl tx get %s' tells whether it began; add id: %s to the file to repeat safely)", err, id, id, id)
				}
				return err
			}
			if app.JSON() {
				return writeJSON(app.Stdout(), resp)
			}
			verb := "begun"
			if !resp.GetCreated() {
				verb = "already begun (same request)"
			}
			tx := resp.GetTransaction()
			_, err = fmt.Fprintf(app.Stdout(), "transaction %s %s: %s\n", tx.GetId(), verb, txStateName(tx.GetState()))
			return err
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "transaction file (YAML or JSON; - for standard input)")
	return c
}

func newTxGetCommand(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a transaction and its participants",
		Long:  `Show a transaction: its header, then one row per participant with its vote, whether it acknowledged the decision, and its last error. -o json prints the transaction message.`,
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := app.txClient()
			if err != nil {
				return err
			}
			ctx, cancel := app.CallContext(cmd.Context())
			defer cancel()
			resp, err := client.GetTransaction(ctx, &sagacoordv1.GetTransactionRequest{TransactionId: args[0]})
			if err != nil {
				return app.rpcErrorOf(ctx, txService, err)
			}
			if app.JSON() {
				return writeJSON(app.Stdout(), resp.GetTransaction())
			}
			return printTransaction(app.Stdout(), resp.GetTransaction())
		},
	}
}

func printTransaction(w io.Writer, tx *sagacoordv1.Transaction) error {
	h := newTable(w)
	field := func(k, v string) {
		if v != "" {
			h.row(k+":", v)
		}
	}
	field("ID", tx.GetId())
	field("STATE", txStateName(tx.GetState()))
	field("REASON", tx.GetReason())
	field("CREATED", formatTS(tx.GetCreatedAt()))
	field("DECIDED", formatTS(tx.GetDecidedAt()))
	field("FINISHED", formatTS(tx.GetFinishedAt()))
	field("VERSION", fmt.Sprint(tx.GetVersion()))
	if err := h.flush(); err != nil {
		return err
	}
	if len(tx.GetParticipants()) == 0 {
		return nil
	}
	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	t := newTable(w, "PARTICIPANT", "VOTE", "ACKED", "LAST ERROR")
	for _, p := range tx.GetParticipants() {
		t.row(p.GetName(), voteName(p.GetVote()), strconv.FormatBool(p.GetAcked()), p.GetLastError())
	}
	return t.flush()
}

func newTxListCommand(app *App) *cobra.Command {
	var (
		state, pageToken string
		limit            int
		all              bool
	)
	c := &cobra.Command{
		Use:   "list [--state S] [--limit N] [--all]",
		Short: "List transactions",
		Long: `List transactions, at most --limit of them (default 50); --all follows page tokens.
--state takes PREPARING, COMMITTING, ABORTING, COMMITTED or ABORTED (any case; the
TRANSACTION_STATE_ prefix is optional). -o json prints one JSON array of transactions.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &sagacoordv1.ListTransactionsRequest{}
			if state != "" {
				st, err := parseTxState("--state", state)
				if err != nil {
					return err
				}
				req.State = st
			}
			if limit <= 0 {
				return flagError("invalid --limit %d: must be positive", limit)
			}
			client, err := app.txClient()
			if err != nil {
				return err
			}
			var txs []*sagacoordv1.Transaction
			next, err := followPages(cmd.Context(), app, txService, pageToken, limit, all, func(ctx context.Context, size int32, token string) (string, int, error) {
				req.PageSize, req.PageToken = size, token
				resp, err := client.ListTransactions(ctx, req)
				if err != nil {
					return "", 0, err
				}
				txs = append(txs, resp.GetTransactions()...)
				return resp.GetNextPageToken(), len(txs), nil
			})
			if err != nil {
				return err
			}
			if !all && len(txs) > limit {
				txs = txs[:limit]
			}
			if app.JSON() {
				err = writeJSONArray(app.Stdout(), txs)
			} else {
				t := newTable(app.Stdout(), "ID", "STATE", "PARTICIPANTS", "CREATED", "FINISHED", "REASON")
				for _, tx := range txs {
					t.row(tx.GetId(), txStateName(tx.GetState()), fmt.Sprint(len(tx.GetParticipants())),
						formatTS(tx.GetCreatedAt()), formatTS(tx.GetFinishedAt()), tx.GetReason())
				}
				err = t.flush()
			}
			if err == nil && next != "" {
				fmt.Fprintf(app.Stderr(), "more transactions: repeat with --page-token %s, or use --all\n", next)
			}
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&state, "state", "", "only transactions in this state")
	f.IntVar(&limit, "limit", 50, "at most this many transactions; with --all, the page size")
	f.BoolVar(&all, "all", false, "follow page tokens until every transaction is listed")
	f.StringVar(&pageToken, "page-token", "", "continue a listing where a previous one stopped")
	return c
}

func newTxWatchCommand(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "watch ID",
		Short: "Follow a transaction until it is decided and done",
		Long: `Follow a transaction, printing one line per change (-o json: one JSON object per line).
Exits 0 when it COMMITTED, 3 when it ABORTED. --timeout does not apply; Ctrl-C stops (130).`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return watchTransaction(cmd.Context(), app, args[0])
		},
	}
}

func watchTransaction(ctx context.Context, app *App, id string) error {
	client, err := app.txClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.WatchTransaction(ctx, &sagacoordv1.WatchTransactionRequest{TransactionId: id})
	if err != nil {
		return app.rpcErrorOf(ctx, txService, err)
	}
	var last *sagacoordv1.Transaction
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if last != nil {
				if code, done := txExitCode(last.GetState()); done {
					return txOutcome(last, code)
				}
			}
			return &ExitError{Code: ExitServer, Err: fmt.Errorf("the coordinator ended the watch before transaction %s was done", id)}
		}
		if err != nil {
			return app.rpcErrorOf(ctx, txService, err)
		}
		tx := resp.GetTransaction()
		if app.JSON() {
			err = writeJSONLine(app.Stdout(), tx)
		} else {
			_, err = fmt.Fprintln(app.Stdout(), txChangeLine(tx))
		}
		if err != nil {
			return err
		}
		last = tx
		// COMMITTED and ABORTED are decisions; the stream ends once every participant acked
		// (DONE), which is when the watch ends too.
	}
}

func txOutcome(tx *sagacoordv1.Transaction, code int) error {
	if code == ExitOK {
		return nil
	}
	msg := fmt.Sprintf("transaction %s %s", tx.GetId(), txStateName(tx.GetState()))
	if tx.GetReason() != "" {
		msg += ": " + tx.GetReason()
	}
	return &ExitError{Code: code, Err: errors.New(msg)}
}

// txChangeLine prints a transaction's state on one line:
//
//	2025-06-01T10:00:01.000Z PREPARING v2 bank-a=YES bank-b=?
func txChangeLine(tx *sagacoordv1.Transaction) string {
	s := formatTS(tx.GetFinishedAt())
	if s == "" {
		s = formatTS(tx.GetDecidedAt())
	}
	if s == "" {
		s = formatTS(tx.GetCreatedAt())
	}
	if s == "" {
		s = "-"
	}
	line := fmt.Sprintf("%s %s v%d", s, txStateName(tx.GetState()), tx.GetVersion())
	for _, p := range tx.GetParticipants() {
		vote := voteName(p.GetVote())
		if p.GetVote() == sagacoordv1.Vote_VOTE_UNSPECIFIED {
			vote = "?"
		}
		line += " " + p.GetName() + "=" + vote
		if p.GetAcked() {
			line += "(acked)"
		}
		if p.GetLastError() != "" {
			line += fmt.Sprintf("(error %q)", p.GetLastError())
		}
	}
	if tx.GetReason() != "" {
		line += fmt.Sprintf(" reason=%q", tx.GetReason())
	}
	return line
}

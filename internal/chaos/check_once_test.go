package chaos

import (
	"strings"
	"testing"
	"time"

	"github.com/sagacoord/sagacoord/saga"
)

var onceDef = &saga.Definition{Steps: []saga.StepDefinition{
	{Name: "debit", Participant: "bank-a", Action: "debit", Compensation: "refund_debit"},
	{Name: "credit", Participant: "bank-b", Action: "credit", Compensation: "undo_credit"},
}}

func turn(from, to string, at time.Time) saga.Transition {
	return saga.Transition{Step: -1, From: from, To: to, At: at}
}

// G8 fails a saga whose deadline (or failure) turned it to COMPENSATING twice without a retry
// between, and one that compensates for its deadline before it was due.
func TestG8DeadlineFiresOnce(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	deadline := t0.Add(2 * time.Second)
	mk := func(id, reason string, h ...saga.Transition) sagaRow {
		return sagaRow{id: id, status: "COMPENSATED", def: onceDef, state: saga.State{Deadline: deadline, Reason: reason, History: h}}
	}
	reason := deadlineReason + deadline.Format(time.RFC3339Nano)
	c := &sagaChecks{sagas: []sagaRow{
		mk("good", reason, turn("", "RUNNING", t0), turn("RUNNING", "COMPENSATING", deadline.Add(time.Millisecond)), turn("COMPENSATING", "COMPENSATED", deadline.Add(time.Second))),
		mk("twice", reason, turn("", "RUNNING", t0), turn("RUNNING", "COMPENSATING", deadline), turn("COMPENSATING", "RUNNING", deadline), turn("RUNNING", "COMPENSATING", deadline)),
		mk("retried", reason, turn("RUNNING", "COMPENSATING", deadline), turn("COMPENSATING", "FAILED", deadline), turn("FAILED", "RUNNING", deadline), turn("RUNNING", "COMPENSATING", deadline)),
		mk("early", reason, turn("", "RUNNING", t0), turn("RUNNING", "COMPENSATING", deadline.Add(-time.Second))),
		mk("early-but-a-step-failed", "step credit failed", turn("RUNNING", "COMPENSATING", deadline.Add(-time.Second))),
		{id: "no-deadline", status: "COMPLETED", def: onceDef},
	}}
	v := newVerdict(G8)
	c.g8(v)
	if v.Passed || v.Violations != 2 || v.Checked != 5 {
		t.Fatalf("G8 = %+v, want 2 violations of 5 checked", v.InvariantResult)
	}
	got := strings.Join(v.Offending, "\n")
	if !strings.Contains(got, "twice: turned RUNNING -> COMPENSATING 2 times with 0 retry") || !strings.Contains(got, "early: compensating for its deadline 00:00:02.000 since 00:00:01.000, before it was due") {
		t.Errorf("offending:\n%s", got)
	}
	v = newVerdict(G8)
	(&sagaChecks{sagas: []sagaRow{{id: "x", def: onceDef}}}).g8(v)
	if !v.Passed || v.Detail != "no saga has a deadline" {
		t.Errorf("G8 without deadlines = %+v", v.InvariantResult)
	}
}

// G9 fails a step compensated twice, a compensation without its action, and one that does not
// reverse its action exactly, in any status; a noop participant's barrier counts too.
func TestG9CompensationAppliedOnce(t *testing.T) {
	e := func(participant, gid, step, kind, account string, amount int64) entry {
		return entry{participant: participant, gid: gid, step: step, kind: kind, account: account, amount: amount}
	}
	ledger := []entry{
		e("bank-a", "ok", "debit", "action", "acct-1", -10), e("bank-a", "ok", "debit", "compensate", "acct-1", 10),
		e("bank-a", "twice", "debit", "action", "acct-1", -10), e("bank-a", "twice", "debit", "compensate", "acct-1", 10), e("bank-a", "twice", "debit", "compensate", "acct-1", 10),
		e("bank-b", "orphan", "credit", "compensate", "acct-2", -10),
		e("bank-a", "skewed", "debit", "action", "acct-1", -10), e("bank-a", "skewed", "debit", "compensate", "acct-1", 20),
		e("bank-a", "done", "debit", "action", "acct-1", -10), e("bank-b", "done", "credit", "action", "acct-2", 10),
	}
	c := &sagaChecks{kinds: map[string]string{"bank-a": "transfer", "bank-b": "transfer"}, byGid: map[string][]entry{}}
	for _, x := range ledger {
		c.byGid[x.gid] = append(c.byGid[x.gid], x)
	}
	for _, id := range []string{"ok", "twice", "orphan", "skewed", "done"} {
		c.sagas = append(c.sagas, sagaRow{id: id, status: "FAILED", def: onceDef})
	}
	v := newVerdict(G9)
	c.g9(v)
	got := strings.Join(v.Offending, "\n")
	if v.Passed || v.Violations != 3 || v.Checked != 4 {
		t.Fatalf("G9 = %+v, want 3 violations of 4 compensated steps:\n%s", v.InvariantResult, got)
	}
	for _, want := range []string{"twice: step debit at bank-a: compensated 2 times", "orphan: step credit at bank-b: a compensation with 0 action", "skewed: step debit at bank-a: compensation acct-1 +20 does not reverse action acct-1 -10"} {
		if !strings.Contains(got, want) {
			t.Errorf("offending lacks %q:\n%s", want, got)
		}
	}

	noop := &sagaChecks{kinds: map[string]string{"bank-a": "noop", "bank-b": "noop"}, sagas: []sagaRow{{id: "n", def: onceDef}},
		barrierOf: map[string][]entry{"n": {e("bank-a", "n", "debit", "compensate", "succeeded", 0), e("bank-a", "n", "debit", "compensate", "succeeded", 0)}}}
	v = newVerdict(G9)
	noop.g9(v)
	if v.Passed || !strings.Contains(strings.Join(v.Offending, ""), "2 compensations in the barrier") {
		t.Errorf("noop G9 = %+v", v.InvariantResult)
	}
}

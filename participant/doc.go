// Package participant is the Go SDK for sagacoord workers: processes that consume step commands
// from their RabbitMQ queue, apply a local transaction and reply.
//
// A Worker guarantees exactly-once effects over at-least-once delivery. Every command passes
// through the barrier, a table in the participant's own database keyed by (saga id, step, kind),
// written in the same local transaction as the handler's effect:
//
//   - an action runs its handler at most once with a lasting effect; a duplicate gets the stored
//     reply again, without running the handler;
//   - a compensation that arrives before its action records a no-op, and the late action is then
//     refused with a "failed" reply, without running its handler;
//   - a compensation for an action that failed (or never ran) succeeds without running its
//     handler;
//   - the reply is published only after the local commit, and the delivery acknowledged only
//     after the broker confirmed the reply, so a crash anywhere leads to a redelivery that is
//     answered from the barrier.
//
// Workers take part in two-phase commit too: HandleTx registers the PREPARE, COMMIT and ABORT
// handlers, whose commands go through the same barrier, keyed (transaction id, participant,
// kind) (see TxHandlers), and a prepared transaction is kept durably and asked about until its
// decision arrives.
//
// With Config.MaxBatch above 1 (group commit, opt-in), a handler goroutine decides up to MaxBatch
// waiting saga step commands in one local transaction, each in a savepoint of its own, so that
// each rule above holds per command, and publishes their replies together.
//
// The barrier forgets what it no longer needs: the worker subscribes to its final notices, which
// the coordinator sends when it deletes a finished saga or transaction. From the notice on, a
// late copy of one of its commands is acknowledged without effect or reply; its rows are deleted
// after Config.BarrierGrace, and the notice itself forgotten after Config.FinalHorizon. A FAILED
// saga is never announced. A negative BarrierGrace keeps every row.
//
// A command that cannot be decoded, is addressed to another participant, names an action with no
// handler, or carries values the database cannot store is dead-lettered (and logged); the worker
// goes on with the next. A database or broker failure returns the command to the queue after
// Config.RetryBackoff.
//
// A minimal worker:
//
//	w, err := participant.New(participant.Config{Name: "bank-a", Transport: tr, DB: pool})
//	w.Handle("debit", debit)
//	w.Handle("refund_debit", refundDebit)
//	if err := w.Migrate(ctx); err != nil { ... }
//	if err := w.Start(ctx); err != nil { ... }
//	defer w.Stop()
//
// # Stability
//
// This package is public and follows the module's semantic versioning: within a major version
// its exported names only grow and keep their meaning, a new Config field's zero value keeps the
// behaviour from before it, and a Worker speaks version 1 of the wire protocol
// (docs/protocol.md). The barrier's tables belong to the SDK: Worker.Migrate creates and upgrades
// them. Log messages, and the defaults of tuning fields (Prefetch, Concurrency, MaxBatch,
// RetryBackoff), may change in any release; metric and span names are those of
// docs/observability.md.
package participant

// Inside the package, by concern:
//
//   - worker.go: the Worker's life (New, Handle, Migrate, Start, Stop) and its delivery loop;
//     saga.go and twopc.go: what happens to a step or a 2PC delivery; settle.go: replies, acks,
//     requeues and dead letters; watchdog.go: decision queries for prepared transactions.
//   - barrier.go: the engine that decides every command, saga step or 2PC, in one local
//     transaction: claim the command's row, replay a stored reply (or reopen an earlier
//     attempt's failure), run the handler in a savepoint (handler.go: deadline, panic, output),
//     store the reply, commit. saga_rules.go and twopc_rules.go hold each kind's rules.
//   - barrier.sql: every statement, quoted by docs/protocol.md §8 and docs/twopc.md §8;
//     barrier_sql.go loads it and queues the statements on a row.
//   - localtx.go, batch.go, savepoint.go: the pipelined local transaction, its batches, and the
//     savepoint Tx that handlers get. group.go: several step commands in one transaction.
//
// One engine serves both protocols because they do the same thing: a forward command (action,
// PREPARE) runs once and stores its reply, its undo (compensation, ABORT) plants a refusal when
// it comes first and otherwise undoes what the forward command decided, and every duplicate gets
// the stored reply. Kept apart, as kind rules, is what really differs: only a later action
// attempt reopens a business failure (2PC votes are final); a compensation locks the action row
// it reads, because of that reopening, and turns a stored failure into the refusal; a PREPARE
// records the prepared transaction, a COMMIT needs this participant's YES (else it is a protocol
// violation, dead-lettered), and COMMIT and ABORT forget the prepared record before their
// handler; a step's deadline is a retry, a Prepare's a NO, and COMMIT and ABORT have none; a
// failure that keeps nothing is a "retry" reply for a step and no reply (requeue) for 2PC. Only
// saga steps are grouped: a group's savepoint bookkeeping lives in localTx and group.go.

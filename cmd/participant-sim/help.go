package main

// helpLong is participant-sim's --help: what it simulates and the config file format. Flags
// follow it, each with its environment variable where it has one.
const helpLong = `participant-sim runs simulated sagacoord participants, each a worker of the participant SDK
with its own schema (<schema-prefix><name>) and ledger in one PostgreSQL database.

Kinds, and the actions (compensations) each understands; input is the saga input:
  transfer   debit (refund_debit), credit (undo_credit)   {"from":"acct-1","to":"acct-2","amount":10}
             A debit never overdraws: it fails with "insufficient funds". Accounts come from
             --seed-accounts: acct-1..acct-N.
  inventory  reserve (release)                            {"sku":"sku-1","qty":2}
             Stock is seeded like accounts: sku-1..sku-N; a reserve beyond stock fails.
  payment    charge (refund)                              {"account":"cust-1","amount":10} ("from" also works)
  noop       any action succeeds with output {}: the barrier without an effect, for benchmarks.
  conformance the test contract of sagalab participant-check (docs/conformance.md): check.ok,
             check.echo, check.fail, check.fail-first, check.retry-once (check.undo); a PREPARE
             votes as its payload's "vote" says. Other actions are dead-lettered; faults do not apply.
  Any other action name fails (business failure) with a message that lists the known ones
  (conformance excepted).
  A compensation reverses its action's ledger entry; each (saga, step, kind) has one entry.

Two-phase commit (TwoPCService): every participant also prepares, commits and aborts. The
participant payload given to BeginTransaction is
  transfer   {"account":"acct-1","amount":10,"direction":"debit"|"credit"}
             PREPARE of a debit holds the amount: it votes NO ("insufficient available funds")
             unless balance - held covers it, and saga debits cannot spend what is held. COMMIT
             moves the balance and releases the hold; ABORT releases it. A credit holds nothing.
  inventory  {"sku":"sku-1","qty":2}           holds stock the same way
  payment    {"account":"cust-1","amount":10}  recorded at COMMIT, nothing held
  noop       always votes YES, holds nothing
  Each hold is a row of <schema>.holds with prepared_at and decided_at (how long it blocked).
  Fault knobs apply under the names prepare, commit and abort: fail_probability votes NO (prepare
  only; a decision cannot fail), retry_probability requeues the command (each try draws anew),
  latency, hang_probability (a frozen participant; with hang_for, a slow one) and
  crash_after_commit_probability.

A bare name in --participants takes its kind from its prefix: bank* transfer, inventory* and
stock* inventory, pay* payment, anything else noop; name=kind says it explicitly.

Config file (--config, YAML or JSON; unknown keys are errors):
  seed: 42                       # fault decisions are reproducible for a seed
  schema_prefix: sim_
  participants:
    - name: bank-a
      kind: transfer
      seed_accounts: 100         # defaults to --seed-accounts
      initial_balance: 1000      # defaults to --initial-balance
      prefetch: 32               # SDK defaults when 0
      concurrency: 32
      max_batch: 8               # group commit: commands decided in one local transaction (SDK default 1: one each)
      faults:                    # by action or compensation name; "*" for all others
        debit:
          fail_probability: 0.1              # business failure: the saga compensates
          retry_probability: 0.2             # transient failure: the coordinator retries
          latency: 20ms                      # added before the handler
          hang_probability: 0.01             # the handler hangs (a redelivery does not hang)
          hang_for: 5s                       # ... this long, then goes on and replies late; unset:
                                             # until shutdown, with the SDK's handler deadline off.
                                             # A bounded hang keeps the deadline: one longer than the
                                             # command's timeout ends there, answered retry, no effect
          crash_after_commit_probability: 0  # exit 137 after the local commit, before reply and ack
        "*":
          latency: 1ms
  Fault decisions depend on (seed, participant, saga, step, kind, action, attempt), so a retried
  attempt draws anew and a run is reproducible whatever the scheduling.`

const helpExample = `  participant-sim --participants bank-a,bank-b,inventory,payments --seed-accounts 100 --initial-balance 1000
  participant-sim --participants 'east=transfer,west=transfer,bench=noop'
  participant-sim --config sim.yaml`

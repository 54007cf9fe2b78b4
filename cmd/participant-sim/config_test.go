package main

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/protocol"
)

func TestParseParticipants(t *testing.T) {
	t.Parallel()
	ps, err := parseParticipants(" bank-a,bank-b=noop, inventory,payments,stock-eu , bench ,x=payment")
	require.NoError(t, err)
	got := map[string]string{}
	for _, p := range ps {
		got[p.Name] = p.Kind
	}
	require.Equal(t, map[string]string{
		"bank-a": kindTransfer, "bank-b": kindNoop, "inventory": kindInventory, "payments": kindPayment,
		"stock-eu": kindInventory, "bench": kindNoop, "x": kindPayment,
	}, got)

	_, err = parseParticipants(" , ")
	require.ErrorContains(t, err, "--participants is empty")
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := simConfig{SchemaPrefix: "sim_", Participants: []participantConfig{{Name: "bank-a", Kind: kindTransfer}}}
	require.NoError(t, ok.validate())

	tests := []struct {
		name string
		c    simConfig
		want string
	}{
		{"none", simConfig{SchemaPrefix: "sim_"}, "no participants"},
		{"bad kind", simConfig{SchemaPrefix: "sim_", Participants: []participantConfig{{Name: "a", Kind: "bank"}}}, `kind "bank" must be one of transfer, inventory, payment, noop`},
		{"bad name", simConfig{SchemaPrefix: "sim_", Participants: []participantConfig{{Name: "-a b", Kind: kindNoop}}}, "must start with a letter or digit"},
		{"twice", simConfig{SchemaPrefix: "sim_", Participants: []participantConfig{{Name: "a", Kind: kindNoop}, {Name: "a", Kind: kindNoop}}}, "listed twice"},
		{"schema clash", simConfig{SchemaPrefix: "sim_", Participants: []participantConfig{{Name: "bank-a", Kind: kindNoop}, {Name: "bank.a", Kind: kindNoop}}}, `schema "sim_bank_a" is also the schema of "bank-a"`},
		{"bad prefix", simConfig{SchemaPrefix: "Sim", Participants: ok.Participants}, "schema_prefix"},
		{"probability", simConfig{SchemaPrefix: "sim_", Participants: []participantConfig{{Name: "a", Kind: kindNoop, Faults: map[string]faults{"x": {FailProbability: 1.5}}}}}, "fail_probability 1.5 must be between 0 and 1"},
		{"max batch", simConfig{SchemaPrefix: "sim_", Participants: []participantConfig{{Name: "a", Kind: kindNoop, MaxBatch: -1}}}, "max_batch must not be negative"},
		{"latency", simConfig{SchemaPrefix: "sim_", Participants: []participantConfig{{Name: "a", Kind: kindNoop, Faults: map[string]faults{"x": {Latency: -1}}}}}, "latency"},
		{"hang_for zero", simConfig{SchemaPrefix: "sim_", Participants: []participantConfig{{Name: "a", Kind: kindNoop, Faults: map[string]faults{"x": {HangProbability: 1, HangFor: ptr(duration(0))}}}}}, "hang_for 0s must be positive"},
		{"hang_for negative", simConfig{SchemaPrefix: "sim_", Participants: []participantConfig{{Name: "a", Kind: kindNoop, Faults: map[string]faults{"x": {HangProbability: 1, HangFor: ptr(duration(-time.Second))}}}}}, "hang_for -1s must be positive"},
		{"hang_for alone", simConfig{SchemaPrefix: "sim_", Participants: []participantConfig{{Name: "a", Kind: kindNoop, Faults: map[string]faults{"x": {HangFor: ptr(duration(time.Second))}}}}}, "hang_for without hang_probability never fires"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.ErrorContains(t, tt.c.validate(), tt.want)
		})
	}
}

func TestLoadConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "sim.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
seed: 42
participants:
  - name: bank-a
    kind: transfer
    seed_accounts: 3
    max_batch: 1
    faults:
      debit: {fail_probability: 0.1, latency: 20ms, crash_after_commit_probability: 0.01}
      "*": {retry_probability: 0.5, hang_probability: 0.1, hang_for: 2s}
  - name: bench
    kind: noop
`), 0o600))
	o := options{configFile: path, seedAccounts: 10, initialBalance: 500, seed: 7}
	c, err := o.simConfig()
	require.NoError(t, err)
	require.EqualValues(t, 42, c.Seed, "the file's seed wins")
	require.Equal(t, "sim_", c.SchemaPrefix)
	a := c.Participants[0]
	require.Equal(t, 3, a.SeedAccounts, "the file wins")
	require.Equal(t, 1, a.MaxBatch)
	require.EqualValues(t, 500, a.InitialBalance, "the flag fills what the file leaves out")
	require.Equal(t, faults{FailProbability: 0.1, Latency: duration(20 * time.Millisecond), CrashAfterCommitProbability: 0.01}, a.faultsFor("debit"))
	require.Equal(t, faults{RetryProbability: 0.5, HangProbability: 0.1, HangFor: ptr(duration(2 * time.Second))}, a.faultsFor("credit"), "the wildcard covers other actions")
	require.Equal(t, faults{}, c.Participants[1].faultsFor("anything"))

	require.NoError(t, os.WriteFile(path, []byte(`{"participants":[{"name":"a","kind":"noop","faults":{"x":{"fail_probabilty":0.5}}}]}`), 0o600))
	_, err = loadConfigFile(path)
	require.ErrorContains(t, err, "fail_probabilty", "a misspelt knob is an error, not silently ignored")
	require.ErrorContains(t, err, "config file "+path+": line 1: field fail_probabilty not found")

	require.NoError(t, os.WriteFile(path, []byte("seed: 3\nparticipants:\n  - name: a\n    kind: noop\n    concurrancy: 4\n"), 0o600))
	_, err = loadConfigFile(path)
	require.ErrorContains(t, err, "config file "+path+": line 5: field concurrancy not found", "the error names the file and the line")

	require.NoError(t, os.WriteFile(path, []byte(`{"participants":[{"name":"a","kind":"noop","faults":{"x":{"latency":20}}}]}`), 0o600))
	_, err = loadConfigFile(path)
	require.ErrorContains(t, err, `a duration is a string such as "25ms"`)

	_, err = options{configFile: path, participants: "a"}.simConfig()
	require.ErrorContains(t, err, "not both")
	_, err = options{}.simConfig()
	require.ErrorContains(t, err, "no participants")
}

func TestFlags(t *testing.T) {
	var out bytes.Buffer
	_, err := parseFlags([]string{"--help"}, &out)
	require.True(t, errors.Is(err, pflag.ErrHelp))
	for _, want := range []string{"--participants", "-database-url", "SAGACOORD_DATABASE_URL", "SAGACOORD_AMQP_URL", "crash_after_commit_probability", "-seed-accounts", "refund_debit"} {
		require.Contains(t, out.String(), want)
	}

	t.Setenv("SAGACOORD_DATABASE_URL", "postgres://u:secret@db:5432/x")
	t.Setenv("SAGACOORD_AMQP_URL", "amqp://u:secret@mq:5672/")
	out.Reset()
	_, err = parseFlags([]string{"--help"}, &out)
	require.True(t, errors.Is(err, pflag.ErrHelp))
	require.NotContains(t, out.String(), "secret", "--help never shows a URL from the environment")

	o, err := parseFlags([]string{"--participants", "bank-a", "--seed-accounts", "5", "--amqp-url", "amqp://flag/"}, &out)
	require.NoError(t, err)
	require.Equal(t, "postgres://u:secret@db:5432/x", o.databaseURL, "the environment fills an absent flag")
	require.Equal(t, "amqp://flag/", o.amqpURL, "a flag wins over the environment")
	require.Equal(t, 5, o.seedAccounts)
	c, err := o.simConfig()
	require.NoError(t, err)
	require.False(t, c.SkipDeclare, "the workers declare by default")

	o, err = parseFlags([]string{"--participants", "bank-a", "--skip-declare"}, &out)
	require.NoError(t, err)
	c, err = o.simConfig()
	require.NoError(t, err)
	require.True(t, c.SkipDeclare, "--skip-declare reaches the workers' configuration")

	_, err = parseFlags([]string{"stray"}, &out)
	require.ErrorContains(t, err, "unexpected arguments")
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	require.Equal(t, "postgres://u:xxxxx@db:5432/x", redactURL("postgres://u:secret@db:5432/x"))
	require.Equal(t, "amqp://guest:xxxxx@127.0.0.1:5672/", redactURL("amqp://guest:guest@127.0.0.1:5672/"))
	require.NotContains(t, redactURL("host=db password=secret"), "secret")
}

func TestSchemaOf(t *testing.T) {
	t.Parallel()
	require.Equal(t, "sim_bank_a", schemaOf("sim_", "bank-a"))
	require.Equal(t, "sim_eu_stock_1", schemaOf("sim_", "EU.Stock-1"))
}

func TestDiceIsDeterministicAndFair(t *testing.T) {
	t.Parallel()
	d := dice{seed: 42, participant: "bank-a"}
	cmd := &protocol.StepCommand{SagaID: "s1", Step: "debit", Kind: protocol.KindAction, Action: "debit", Attempt: 1}
	require.Equal(t, d.roll(cmd, "fail"), d.roll(cmd, "fail"))
	require.NotEqual(t, d.roll(cmd, "fail"), d.roll(cmd, "retry"), "knobs draw independently")
	require.NotEqual(t, d.roll(cmd, "fail"), dice{seed: 43, participant: "bank-a"}.roll(cmd, "fail"))
	next := *cmd
	next.Attempt = 2
	require.NotEqual(t, d.roll(cmd, "fail"), d.roll(&next, "fail"), "a new attempt draws anew")
	require.False(t, d.hit(cmd, "fail", 0))
	require.True(t, d.hit(cmd, "fail", 1))

	hits := 0
	const n = 20000
	for i := range n {
		c := *cmd
		c.SagaID = "s" + string(rune('a'+i%26)) + time.Duration(i).String()
		if d.hit(&c, "fail", 0.3) {
			hits++
		}
	}
	require.Less(t, math.Abs(float64(hits)/n-0.3), 0.02, "hit rate %d/%d", hits, n)
}

// TestOnlyUnboundedHangsTurnOffTheHandlerDeadline: only a participant whose hangs last until
// shutdown opts out of the SDK's handler deadline; bounded hangs (hang_for) keep it.
func TestOnlyUnboundedHangsTurnOffTheHandlerDeadline(t *testing.T) {
	quiet := participantConfig{Faults: map[string]faults{"credit": {Latency: duration(time.Second), FailProbability: 0.1}}}
	hung := participantConfig{Faults: map[string]faults{"debit": {}, "credit": {HangProbability: 0.2}}}
	bounded := participantConfig{Faults: map[string]faults{"credit": {HangProbability: 0.2, HangFor: ptr(duration(time.Second))}}}
	if quiet.hangsUnbounded() {
		t.Error("a participant without hang faults reports unbounded hangs")
	}
	if !hung.hangsUnbounded() {
		t.Error("a participant with hang_probability 0.2 on credit reports no unbounded hangs")
	}
	if bounded.hangsUnbounded() {
		t.Error("a participant whose hangs all have hang_for reports unbounded hangs")
	}
}

func ptr[T any](v T) *T { return &v }

// The configuration files shipped in the repository, and the JSON the chaos runner writes, load
// and validate.
func TestShippedConfigFilesLoad(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"../../examples/sim.yaml", "../../scripts/bench-participants.yaml"} {
		c, err := options{configFile: path}.simConfig()
		require.NoError(t, err, path)
		require.NotEmpty(t, c.Participants, path)
	}
	chaos := filepath.Join(t.TempDir(), "bank-b.sim.json")
	require.NoError(t, os.WriteFile(chaos, []byte(`{
  "participants": [
    {
      "name": "bank-b",
      "kind": "transfer",
      "seed_accounts": 20,
      "initial_balance": 1000,
      "faults": {
        "credit": {
          "fail_probability": 0.2,
          "latency": "20ms",
          "hang_probability": 0.5,
          "hang_for": "1.5s",
          "crash_after_commit_probability": 0.05
        }
      }
    }
  ],
  "schema_prefix": "chaos_0a1b2c3d_",
  "seed": 18446744073709551615
}`), 0o600))
	c, err := options{configFile: chaos}.simConfig()
	require.NoError(t, err)
	require.Equal(t, uint64(18446744073709551615), c.Seed)
	require.Equal(t, faults{FailProbability: 0.2, Latency: duration(20 * time.Millisecond), HangProbability: 0.5,
		HangFor: ptr(duration(1500 * time.Millisecond)), CrashAfterCommitProbability: 0.05}, c.Participants[0].faultsFor("credit"))
}

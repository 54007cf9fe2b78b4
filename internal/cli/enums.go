package cli

import (
	"sort"
	"strings"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

// Enum values print without their type prefix (RUNNING, not SAGA_STATUS_RUNNING) because that is how
// the design and the operators name them; input accepts either form in any case.

const (
	sagaStatusPrefix = "SAGA_STATUS_"
	stepStatusPrefix = "STEP_STATUS_"
	txStatePrefix    = "TRANSACTION_STATE_"
	votePrefix       = "VOTE_"
)

func sagaStatusName(s sagacoordv1.SagaStatus) string { return enumName(s.String(), sagaStatusPrefix) }
func stepStatusName(s sagacoordv1.StepStatus) string { return enumName(s.String(), stepStatusPrefix) }
func txStateName(s sagacoordv1.TransactionState) string {
	return enumName(s.String(), txStatePrefix)
}
func voteName(v sagacoordv1.Vote) string { return enumName(v.String(), votePrefix) }

// enumName strips the prefix; an unknown number (a newer server) prints as protobuf prints it.
func enumName(full, prefix string) string {
	return strings.TrimPrefix(full, prefix)
}

// parseEnum looks name up in values (protobuf's NAME -> number map), accepting the name with or
// without prefix, in any case. UNSPECIFIED is not accepted: a filter on it would mean "no filter",
// which the user gets by leaving the flag out.
func parseEnum(flag, name, prefix string, values map[string]int32) (int32, error) {
	up := strings.ToUpper(strings.TrimSpace(name))
	if !strings.HasPrefix(up, prefix) {
		up = prefix + up
	}
	if v, ok := values[up]; ok && v != 0 {
		return v, nil
	}
	return 0, flagError("invalid %s %q: want one of %s", flag, name, enumChoices(prefix, values))
}

func enumChoices(prefix string, values map[string]int32) string {
	type kv struct {
		name string
		num  int32
	}
	var all []kv
	for n, v := range values {
		if v != 0 {
			all = append(all, kv{strings.TrimPrefix(n, prefix), v})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].num < all[j].num })
	names := make([]string, len(all))
	for i, e := range all {
		names[i] = e.name
	}
	return strings.Join(names, ", ")
}

func parseSagaStatus(flag, s string) (sagacoordv1.SagaStatus, error) {
	v, err := parseEnum(flag, s, sagaStatusPrefix, sagacoordv1.SagaStatus_value)
	return sagacoordv1.SagaStatus(v), err
}

func parseTxState(flag, s string) (sagacoordv1.TransactionState, error) {
	v, err := parseEnum(flag, s, txStatePrefix, sagacoordv1.TransactionState_value)
	return sagacoordv1.TransactionState(v), err
}

// sagaExitCode maps a terminal saga status to the exit code scripts rely on; ok is false while the
// saga is still moving. FAILED counts as an end for watching: the saga waits for an operator.
func sagaExitCode(s sagacoordv1.SagaStatus) (code int, ok bool) {
	switch s {
	case sagacoordv1.SagaStatus_SAGA_STATUS_COMPLETED:
		return ExitOK, true
	case sagacoordv1.SagaStatus_SAGA_STATUS_COMPENSATED:
		return ExitCompensated, true
	case sagacoordv1.SagaStatus_SAGA_STATUS_FAILED:
		return ExitFailed, true
	}
	return 0, false
}

// txExitCode maps a terminal transaction state to an exit code: an aborted transaction rolled back
// like a compensated saga, so it shares exit code 3.
func txExitCode(s sagacoordv1.TransactionState) (code int, ok bool) {
	switch s {
	case sagacoordv1.TransactionState_TRANSACTION_STATE_COMMITTED:
		return ExitOK, true
	case sagacoordv1.TransactionState_TRANSACTION_STATE_ABORTED:
		return ExitCompensated, true
	}
	return 0, false
}

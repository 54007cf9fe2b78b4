package server

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func dur(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func retryFromPB(field string, p *pb.RetryPolicy) (saga.RetryPolicy, error) {
	if p == nil {
		return saga.RetryPolicy{}, nil
	}
	initial, err := duration(field+".initial_backoff", p.GetInitialBackoff())
	if err != nil {
		return saga.RetryPolicy{}, err
	}
	most, err := duration(field+".max_backoff", p.GetMaxBackoff())
	if err != nil {
		return saga.RetryPolicy{}, err
	}
	return saga.RetryPolicy{MaxAttempts: int(p.GetMaxAttempts()), InitialBackoff: initial, MaxBackoff: most, Multiplier: p.GetMultiplier()}, nil
}

func retryToPB(p saga.RetryPolicy) *pb.RetryPolicy {
	return &pb.RetryPolicy{
		MaxAttempts:    int32(p.MaxAttempts),
		InitialBackoff: dur(p.InitialBackoff),
		MaxBackoff:     dur(p.MaxBackoff),
		Multiplier:     p.Multiplier,
	}
}

// definitionFromPB converts and checks the durations; saga.Normalize validates the rest.
func definitionFromPB(d *pb.SagaDefinition) (saga.Definition, error) {
	deadline, err := duration("deadline", d.GetDeadline())
	if err != nil {
		return saga.Definition{}, err
	}
	out := saga.Definition{Name: d.GetName(), Deadline: deadline}
	for i, s := range d.GetSteps() {
		step, err := stepFromPB(fmt.Sprintf("steps[%d]", i), s)
		if err != nil {
			return saga.Definition{}, err
		}
		out.Steps = append(out.Steps, step)
	}
	return out, nil
}

func stepFromPB(field string, s *pb.StepDefinition) (saga.StepDefinition, error) {
	timeout, err := duration(field+".timeout", s.GetTimeout())
	if err != nil {
		return saga.StepDefinition{}, err
	}
	retry, err := retryFromPB(field+".retry", s.GetRetry())
	if err != nil {
		return saga.StepDefinition{}, err
	}
	compRetry, err := retryFromPB(field+".compensation_retry", s.GetCompensationRetry())
	if err != nil {
		return saga.StepDefinition{}, err
	}
	return saga.StepDefinition{
		Name:              s.GetName(),
		Participant:       s.GetParticipant(),
		Action:            s.GetAction(),
		Compensation:      s.GetCompensation(),
		DependsOn:         s.GetDependsOn(),
		Retry:             retry,
		CompensationRetry: compRetry,
		Timeout:           timeout,
		Pivot:             s.GetPivot(),
	}, nil
}

func definitionToPB(d saga.Definition) *pb.SagaDefinition {
	out := &pb.SagaDefinition{Name: d.Name, Deadline: dur(d.Deadline), Version: int32(d.Version), CreatedAt: ts(d.CreatedAt), RegisteredBy: d.RegisteredBy}
	for _, s := range d.Steps {
		out.Steps = append(out.Steps, &pb.StepDefinition{
			Name:              s.Name,
			Participant:       s.Participant,
			Action:            s.Action,
			Compensation:      s.Compensation,
			DependsOn:         s.DependsOn,
			Retry:             retryToPB(s.Retry),
			CompensationRetry: retryToPB(s.CompensationRetry),
			Timeout:           dur(s.Timeout),
			Pivot:             s.Pivot,
		})
	}
	return out
}

var sagaStatusToPB = map[saga.Status]pb.SagaStatus{
	saga.StatusRunning:      pb.SagaStatus_SAGA_STATUS_RUNNING,
	saga.StatusCompleted:    pb.SagaStatus_SAGA_STATUS_COMPLETED,
	saga.StatusCompensating: pb.SagaStatus_SAGA_STATUS_COMPENSATING,
	saga.StatusCompensated:  pb.SagaStatus_SAGA_STATUS_COMPENSATED,
	saga.StatusFailed:       pb.SagaStatus_SAGA_STATUS_FAILED,
}

func sagaStatusFromPB(s pb.SagaStatus) saga.Status {
	for k, v := range sagaStatusToPB {
		if v == s {
			return k
		}
	}
	return ""
}

var stepStatusToPB = map[saga.StepStatus]pb.StepStatus{
	saga.StepPending:      pb.StepStatus_STEP_STATUS_PENDING,
	saga.StepRunning:      pb.StepStatus_STEP_STATUS_RUNNING,
	saga.StepSucceeded:    pb.StepStatus_STEP_STATUS_SUCCEEDED,
	saga.StepFailed:       pb.StepStatus_STEP_STATUS_FAILED,
	saga.StepCompensating: pb.StepStatus_STEP_STATUS_COMPENSATING,
	saga.StepCompensated:  pb.StepStatus_STEP_STATUS_COMPENSATED,
	saga.StepSkipped:      pb.StepStatus_STEP_STATUS_SKIPPED,
}

// sagaToPB converts a stored saga; def supplies step names and may be nil to leave steps out.
func sagaToPB(sg *store.Saga, def *saga.Definition) *pb.Saga {
	out := &pb.Saga{
		Id:                sg.ID.String(),
		Definition:        sg.DefinitionName,
		DefinitionVersion: int32(sg.DefinitionVersion),
		Status:            sagaStatusToPB[sg.State.Status],
		Input:             sg.State.Input,
		Reason:            sg.State.Reason,
		CreatedAt:         ts(sg.CreatedAt),
		UpdatedAt:         ts(sg.UpdatedAt),
		FinishedAt:        ts(sg.FinishedAt),
		Deadline:          ts(sg.State.Deadline),
		Version:           sg.Version,
	}
	for _, a := range sg.State.Audit {
		out.Audit = append(out.Audit, &pb.AuditEntry{Action: a.Action, By: a.By, At: ts(a.At), Reason: a.Reason})
	}
	if def == nil {
		return out
	}
	for i, st := range sg.State.Steps {
		step := &pb.Step{
			Status:              stepStatusToPB[st.Status],
			Attempt:             int32(st.Attempt),
			CompensationAttempt: int32(st.CompAttempt),
			LastError:           st.LastError,
			Output:              st.Output,
			StartedAt:           ts(st.StartedAt),
			FinishedAt:          ts(st.FinishedAt),
		}
		if i < len(def.Steps) {
			step.Name = def.Steps[i].Name
			step.Participant = def.Steps[i].Participant
			step.Pivot = def.Steps[i].Pivot
		}
		out.Steps = append(out.Steps, step)
	}
	return out
}

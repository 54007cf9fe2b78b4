package main

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/conformance"
)

// The conformance kind passes every case of sagalab participant-check, run over the broker
// against the in-process simulator.
func TestSimConformanceKindPassesTheKit(t *testing.T) {
	e := newSimEnv(t)
	e.start(simConfig{Participants: []participantConfig{{Name: "checked", Kind: kindConformance}}}, nil)
	var out strings.Builder
	results, err := conformance.Run(context.Background(), conformance.Config{AMQPURL: e.amqpURL, Participant: "checked"}, &out)
	require.NoError(t, err)
	t.Log("\n" + out.String())
	require.NotEmpty(t, results)
	for _, r := range results {
		require.True(t, r.Passed, "%s: %s", r.Name, r.Why)
	}
}

package testenv

import "github.com/sagacoord/sagacoord/internal/telemetry/pgxtrace"

// SQLCounter is a pgx tracer that counts the statements a connection executes, alone or in
// batches, and the COMMITs among them: the coordinator's own counter. Set it as
// ConnConfig.Tracer.
type SQLCounter = pgxtrace.Counter

// Package traceexport makes the tracer provider of a sagacoord process: spans exported with OTLP
// over gRPC, with span ids from telemetry.IDGenerator. It links the OpenTelemetry SDK's tracing
// and the OTLP exporter, and nothing for metrics or databases, so that a client such as sagactl
// can trace its calls without carrying the rest of the coordinator's telemetry.
package traceexport

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/sagacoord/sagacoord/internal/telemetry"
)

// NewTracerProvider returns an SDK tracer provider with sagacoord's span id generator
// (telemetry.IDGenerator), plus opts. Every tracer provider of sagacoord must use it, or the
// spans it emits after the fact will not connect to their children.
func NewTracerProvider(opts ...sdktrace.TracerProviderOption) *sdktrace.TracerProvider {
	return sdktrace.NewTracerProvider(append([]sdktrace.TracerProviderOption{sdktrace.WithIDGenerator(telemetry.IDGenerator{})}, opts...)...)
}

// Resource returns the resource of a process: its service.name and service.instance.id.
func Resource(service, instance string) (*resource.Resource, error) {
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		attribute.String("service.name", service),
		attribute.String("service.instance.id", instance),
	))
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	return res, nil
}

// OTLP returns a tracer provider that exports to endpoint (host:port, plaintext, or a URL:
// http:// plaintext, https:// TLS, like OTEL_EXPORTER_OTLP_ENDPOINT) in batches. Shut it down to
// flush the last spans.
func OTLP(ctx context.Context, endpoint string, res *resource.Resource, log *slog.Logger) (*sdktrace.TracerProvider, error) {
	opts, err := otlpOptions(endpoint)
	if err != nil {
		return nil, err
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter for %s: %w", RedactURL(endpoint), err)
	}
	if log != nil {
		log.Info("exporting traces", "otlp_endpoint", RedactURL(endpoint))
	}
	return NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

func otlpOptions(endpoint string) ([]otlptracegrpc.Option, error) {
	if strings.Contains(endpoint, "://") {
		if _, err := url.Parse(endpoint); err != nil {
			return nil, fmt.Errorf("OTLP endpoint %s: %w", RedactURL(endpoint), err)
		}
		return []otlptracegrpc.Option{otlptracegrpc.WithEndpointURL(endpoint)}, nil
	}
	if _, _, err := net.SplitHostPort(endpoint); err != nil {
		return nil, fmt.Errorf("OTLP endpoint %q: want host:port or a URL such as http://jaeger:4317: %w", endpoint, err)
	}
	return []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithInsecure()}, nil
}

// RedactURL returns raw with its password masked; a string that does not parse as a URL with a
// scheme is not shown.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		if !strings.ContainsAny(raw, "@/ ") {
			return raw // host:port
		}
		return "(redacted: not a URL)"
	}
	return u.Redacted()
}

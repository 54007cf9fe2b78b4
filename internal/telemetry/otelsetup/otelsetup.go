// Package otelsetup sets up the OpenTelemetry of a sagacoord process (the coordinator, the
// participant simulator, sagactl, and tests): traces exported over OTLP gRPC when an endpoint is
// configured, metrics served in the Prometheus text format on /metrics when an address is
// configured, and no-op providers (no cost) otherwise. Every tracer provider it makes generates span
// ids with telemetry.IDGenerator. It also holds the pgx tracer of the processes' pools.
//
// It links the OpenTelemetry SDK, the OTLP exporter, gRPC and Prometheus, so only binaries and tests
// import it: the participant SDK uses package telemetry, which needs the OpenTelemetry API alone.
package otelsetup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/sagacoord/sagacoord/internal/telemetry"
)

// Config configures Start. Zero values turn each part off.
type Config struct {
	// ServiceName is the service.name resource attribute (e.g. "sagacoord-coordinator").
	ServiceName string
	// InstanceName is the service.instance.id resource attribute.
	InstanceName string
	// OTLPEndpoint, when set, exports spans with OTLP over gRPC to it: host:port (plaintext) or
	// a URL (http:// plaintext, https:// TLS), like OTEL_EXPORTER_OTLP_ENDPOINT. Empty: no traces.
	OTLPEndpoint string
	// MetricsAddr, when set, serves the metrics on http://MetricsAddr/metrics. Empty: no metrics.
	MetricsAddr string
	// TracerProvider, when set, is used instead of an OTLP exporter (tests use an in-memory one).
	// It must generate span ids with telemetry.IDGenerator (see NewTracerProvider), or the spans that
	// sagacoord emits after the fact will not connect to their children.
	TracerProvider trace.TracerProvider
	// MeterProvider, when set, is used instead of the Prometheus endpoint.
	MeterProvider metric.MeterProvider
	// Logger receives the telemetry's own messages. Default: discard.
	Logger *slog.Logger
}

// Telemetry holds the providers Start made. Its providers are never nil: no-op ones when a part is
// off.
type Telemetry struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	tracing        bool
	metrics        bool
	lis            net.Listener
	server         *http.Server
	shutdowns      []func(context.Context) error
}

// NewTracerProvider returns an SDK tracer provider with sagacoord's span id generator
// (telemetry.IDGenerator), plus opts.
func NewTracerProvider(opts ...sdktrace.TracerProviderOption) *sdktrace.TracerProvider {
	return sdktrace.NewTracerProvider(append([]sdktrace.TracerProviderOption{sdktrace.WithIDGenerator(telemetry.IDGenerator{})}, opts...)...)
}

// Start sets up the providers. Shutdown releases them (it flushes pending spans).
func Start(ctx context.Context, cfg Config) (*Telemetry, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Telemetry{TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider()}
	ok := false
	defer func() {
		if !ok {
			_ = t.Shutdown(context.WithoutCancel(ctx))
		}
	}()
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		attribute.String("service.name", cfg.ServiceName),
		attribute.String("service.instance.id", cfg.InstanceName),
	))
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	switch {
	case cfg.TracerProvider != nil:
		t.TracerProvider, t.tracing = cfg.TracerProvider, true
	case cfg.OTLPEndpoint != "":
		opts, err := otlpOptions(cfg.OTLPEndpoint)
		if err != nil {
			return nil, err
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("OTLP trace exporter for %s: %w", RedactURL(cfg.OTLPEndpoint), err)
		}
		tp := NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		t.shutdowns = append(t.shutdowns, tp.Shutdown)
		t.TracerProvider, t.tracing = tp, true
		cfg.Logger.Info("exporting traces", "otlp_endpoint", RedactURL(cfg.OTLPEndpoint))
	}
	switch {
	case cfg.MeterProvider != nil:
		t.MeterProvider, t.metrics = cfg.MeterProvider, true
	case cfg.MetricsAddr != "":
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		exp, err := otelprom.New(otelprom.WithRegisterer(reg))
		if err != nil {
			return nil, fmt.Errorf("prometheus exporter: %w", err)
		}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res))
		t.shutdowns = append(t.shutdowns, mp.Shutdown)
		t.MeterProvider, t.metrics = mp, true
		t.lis, err = net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s (metrics): %w", cfg.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		t.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = t.server.Serve(t.lis) }()
		cfg.Logger.Info("serving metrics", "metrics_addr", t.lis.Addr().String(), "path", "/metrics")
	}
	ok = true
	return t, nil
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

// Tracing reports whether spans are recorded (an OTLP endpoint or a provider was given).
func (t *Telemetry) Tracing() bool { return t.tracing }

// Metrics reports whether metrics are collected.
func (t *Telemetry) Metrics() bool { return t.metrics }

// MetricsAddr returns the address /metrics is served on, or "" when it is not.
func (t *Telemetry) MetricsAddr() string {
	if t.lis == nil {
		return ""
	}
	return t.lis.Addr().String()
}

// Shutdown stops the metrics server and flushes and closes the exporters. It is idempotent.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	if t.server != nil {
		errs = append(errs, t.server.Close())
		t.server = nil
	} else if t.lis != nil {
		errs = append(errs, t.lis.Close())
	}
	t.lis = nil
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, f := range t.shutdowns {
		errs = append(errs, f(ctx))
	}
	t.shutdowns = nil
	return errors.Join(errs...)
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

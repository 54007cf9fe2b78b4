// Package otelsetup sets up the OpenTelemetry of a server process (the coordinator, the
// participant simulator, the lab): traces exported over OTLP gRPC when an endpoint is configured
// (package traceexport), metrics served in the Prometheus text format on /metrics when an address
// is configured, and no-op providers (no cost) otherwise.
//
// It links the OpenTelemetry SDK, the OTLP exporter, gRPC and Prometheus, so only binaries and tests
// import it: the participant SDK uses package telemetry, which needs the OpenTelemetry API alone,
// and sagactl uses traceexport alone.
package otelsetup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sagacoord/sagacoord/internal/telemetry/traceexport"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
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
	// It must generate span ids with telemetry.IDGenerator (see traceexport.NewTracerProvider), or the spans that
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
	res, err := traceexport.Resource(cfg.ServiceName, cfg.InstanceName)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.TracerProvider != nil:
		t.TracerProvider, t.tracing = cfg.TracerProvider, true
	case cfg.OTLPEndpoint != "":
		tp, err := traceexport.OTLP(ctx, cfg.OTLPEndpoint, res, cfg.Logger)
		if err != nil {
			return nil, err
		}
		t.shutdowns = append(t.shutdowns, tp.Shutdown)
		t.TracerProvider, t.tracing = tp, true
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

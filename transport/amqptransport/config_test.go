package amqptransport

import (
	"context"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sagacoord/sagacoord/protocol"
)

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := Config{URL: "amqp://guest:guest@127.0.0.1:5672/"}.WithDefaults()
	want := Config{
		URL:                 c.URL,
		QueueType:           QueueTypeClassic,
		DeliveryLimit:       20,
		Heartbeat:           5 * time.Second,
		DialTimeout:         10 * time.Second,
		ReconnectBackoffMin: 100 * time.Millisecond,
		ReconnectBackoffMax: 5 * time.Second,
		PublishChannels:     8,
		ConnectionName:      "sagacoord",
		Logger:              c.Logger,
	}
	if c != want {
		t.Fatalf("WithDefaults:\n got %+v\nwant %+v", c, want)
	}
	if c.Logger == nil {
		t.Fatalf("WithDefaults left Logger nil")
	}
	if err := c.validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	set := Config{URL: "amqp://h/", QueueType: QueueTypeQuorum, DeliveryLimit: 3, PublishChannels: 1, Logger: slog.Default()}
	if got := set.WithDefaults(); got.QueueType != QueueTypeQuorum || got.DeliveryLimit != 3 || got.PublishChannels != 1 || got.Logger != slog.Default() {
		t.Fatalf("WithDefaults overwrote set fields: %+v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // in the error
	}{
		{"no URL", func(c *Config) { c.URL = "" }, "URL is required"},
		{"not AMQP", func(c *Config) { c.URL = "http://user:secret@h/" }, "not an AMQP URI"},
		{"queue type", func(c *Config) { c.QueueType = "stream" }, `QueueType "stream"`},
		{"delivery limit", func(c *Config) { c.DeliveryLimit = -1 }, "DeliveryLimit -1"},
		{"heartbeat", func(c *Config) { c.Heartbeat = 500 * time.Millisecond }, "Heartbeat 500ms"},
		{"backoff order", func(c *Config) { c.ReconnectBackoffMax = time.Millisecond }, "ReconnectBackoffMin"},
		{"publish channels", func(c *Config) { c.PublishChannels = -2 }, "PublishChannels -2"},
		{"dial timeout", func(c *Config) { c.DialTimeout = -time.Second }, "DialTimeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := Config{URL: "amqp://guest:guest@127.0.0.1:5672/"}.WithDefaults()
			tc.mutate(&c)
			err := c.validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("validate: got %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error reveals the password: %v", err)
			}
		})
	}
}

func TestNewFailsFastWithRedactedURL(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Port 1 on loopback refuses connections at once.
	_, err := New(ctx, Config{URL: "amqp://guest:hunter2@127.0.0.1:1/vh"})
	if err == nil {
		t.Fatalf("New succeeded against a closed port")
	}
	msg := err.Error()
	if strings.Contains(msg, "hunter2") || !strings.Contains(msg, "127.0.0.1:1") {
		t.Fatalf("error should name the broker without its password: %v", err)
	}
	if _, err := New(ctx, Config{}); err == nil || !strings.Contains(err.Error(), "URL is required") {
		t.Fatalf("New with an empty config: got %v", err)
	}
}

func TestQueueArguments(t *testing.T) {
	t.Parallel()
	classic := Config{URL: "amqp://h/"}.WithDefaults()
	if got, want := classic.workQueueArgs(), (amqp.Table{"x-dead-letter-exchange": protocol.ExchangeDead}); !maps.Equal(got, want) {
		t.Errorf("classic work queue args = %v, want %v", got, want)
	}
	if got := classic.deadQueueArgs(); len(got) != 0 {
		t.Errorf("classic dead queue args = %v, want none", got)
	}
	quorum := Config{URL: "amqp://h/", QueueType: QueueTypeQuorum, DeliveryLimit: 7}.WithDefaults()
	want := amqp.Table{"x-dead-letter-exchange": protocol.ExchangeDead, "x-queue-type": "quorum", "x-delivery-limit": int64(7)}
	if got := quorum.workQueueArgs(); !maps.Equal(got, want) {
		t.Errorf("quorum work queue args = %v, want %v", got, want)
	}
	if got, want := quorum.deadQueueArgs(), (amqp.Table{"x-queue-type": "quorum"}); !maps.Equal(got, want) {
		t.Errorf("quorum dead queue args = %v, want %v", got, want)
	}
}

func TestHeadersFromTable(t *testing.T) {
	t.Parallel()
	if got := headersFromTable(nil); got != nil {
		t.Errorf("nil table gave %v", got)
	}
	stamp := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	got := headersFromTable(amqp.Table{
		"s":       "text",
		"bytes":   []byte("raw"),
		"nil":     nil,
		"int":     int32(-7),
		"bool":    true,
		"float":   1.5,
		"time":    stamp,
		"decimal": amqp.Decimal{Scale: 2, Value: 1234},
		"x-death": []any{amqp.Table{"count": int64(1), "queue": "q", "reason": "rejected"}},
	})
	want := map[string]string{
		"s":       "text",
		"bytes":   "raw",
		"nil":     "",
		"int":     "-7",
		"bool":    "true",
		"float":   "1.5",
		"time":    stamp.String(),
		"decimal": "{2 1234}",
		"x-death": "[map[count:1 queue:q reason:rejected]]",
	}
	if !maps.Equal(got, want) {
		t.Fatalf("headersFromTable:\n got %v\nwant %v", got, want)
	}
}

// FuzzHeadersFromTable feeds the converter arbitrary byte arrays, strings, numbers and nested
// tables and arrays: whatever a foreign publisher puts in a header must convert without panic,
// and text must pass through unchanged.
func FuzzHeadersFromTable(f *testing.F) {
	f.Add([]byte{}, "k")
	f.Add([]byte("\x00\x00\x00\x05hello"), "x-death")
	f.Fuzz(func(t *testing.T, raw []byte, key string) {
		tbl := amqp.Table{key: raw, key + "s": string(raw), key + "n": int64(len(raw))}
		tbl["nested"] = amqp.Table{"inner": tbl[key], "list": []any{raw, nil, len(raw)}}
		h := headersFromTable(tbl)
		if h[key] != string(raw) || h[key+"s"] != string(raw) {
			t.Fatalf("string and byte values must pass through unchanged: %q", h)
		}
	})
}

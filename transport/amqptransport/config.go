package amqptransport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sagacoord/sagacoord/internal/secrets"
)

// Queue types accepted by Config.QueueType.
const (
	// QueueTypeClassic declares classic durable queues: the right choice for a single broker.
	QueueTypeClassic = "classic"
	// QueueTypeQuorum declares replicated quorum queues with a delivery limit, for clusters.
	QueueTypeQuorum = "quorum"
)

// Config configures a Transport. The zero value of every field but URL means its default, filled
// in by WithDefaults; New applies WithDefaults itself.
type Config struct {
	// URL is the AMQP URI of the broker, amqp://user:password@host:port/vhost, or
	// amqps://... for TLS. Required. The password never appears in logs or errors.
	//
	// An amqps:// URL always verifies the broker's certificate, against the URL's host. Its TLS
	// comes from TLS when that is set, or else from the URL's query parameters, which name PEM
	// files as RabbitMQ's URI specification does: cacertfile (the CA that signs the broker's
	// certificate; default: the system's roots), certfile and keyfile (a client certificate and
	// its key, for brokers that require one), and server_name_indication (the name the broker's
	// certificate carries, when it is not the host). The files are read again at every
	// reconnection, so renewed certificates take effect without a restart.
	URL string

	// TLS, when set, is the TLS configuration of an amqps:// URL, which must then carry none of
	// the TLS query parameters. It is cloned for each connection; an empty ServerName means the
	// URL's host. Default nil: the URL's query parameters.
	TLS *tls.Config

	// QueueType is the type of the participant and reply queues and of the dead-letter queue:
	// QueueTypeClassic (default) or QueueTypeQuorum. Every process that declares sagacoord's
	// topology on one broker must use the same value: RabbitMQ refuses to redeclare a queue with
	// different arguments.
	QueueType string

	// DeliveryLimit is how many times a quorum queue delivers a message before dead-lettering it,
	// so a poison message that crashes its consumer cannot loop forever. Default 20. Ignored for
	// classic queues.
	DeliveryLimit int

	// Heartbeat is the AMQP heartbeat interval. A silent link is detected after about three
	// intervals. Default 5s.
	Heartbeat time.Duration

	// DialTimeout bounds the TCP connect and AMQP handshake of each connection attempt. Default 10s.
	DialTimeout time.Duration

	// ReconnectBackoffMin is the wait after the first failed attempt to reconnect; the wait
	// doubles after each further failure up to ReconnectBackoffMax. Defaults 100ms and 5s.
	ReconnectBackoffMin time.Duration
	// ReconnectBackoffMax caps the wait between reconnection attempts. Default 5s.
	ReconnectBackoffMax time.Duration

	// PublishChannels is the number of confirm-mode channels that concurrent Publish calls share.
	// A channel publishes one batch at a time and holds it until every confirm is in; calls that
	// arrive meanwhile wait, and the next channel to come free publishes all of them (up to 1024
	// messages) as one batch. More channels let more batches wait for the broker at once; fewer
	// make bigger batches, which cost the broker less per message. Default 8.
	PublishChannels int

	// Bundle makes Publish carry the messages of one batch that go to the same queue in bundles
	// (docs/protocol.md §16): fewer broker messages, each stored and confirmed once. Turn it on
	// only once every consumer of this process's messages reads bundles (sagacoord's coordinator
	// and Go SDK from the version that has this field; a worker in another language that follows
	// §16). Consume reads bundles whatever this says. Default false.
	Bundle bool

	// ConnectionName is advertised as the connection_name client property, suffixed with the
	// connection's role (" publish", " consume", " topology"), so operators can find the
	// connections of one process in the management UI. Default "sagacoord".
	ConnectionName string

	// Logger receives connection losses, reconnections and consumer cancellations. Default: a
	// logger that discards everything.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with every unset field set to its default.
func (c Config) WithDefaults() Config {
	if c.QueueType == "" {
		c.QueueType = QueueTypeClassic
	}
	if c.DeliveryLimit == 0 {
		c.DeliveryLimit = 20
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 5 * time.Second
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.ReconnectBackoffMin == 0 {
		c.ReconnectBackoffMin = 100 * time.Millisecond
	}
	if c.ReconnectBackoffMax == 0 {
		c.ReconnectBackoffMax = 5 * time.Second
	}
	if c.PublishChannels == 0 {
		c.PublishChannels = 8
	}
	if c.ConnectionName == "" {
		c.ConnectionName = "sagacoord"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports every field of c that cannot work, naming the field, without connecting: New
// fails the same way before it dials.
func (c Config) Validate() error { return c.WithDefaults().validate() }

// validate reports every field of a defaulted Config that cannot work, naming the field.
func (c Config) validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("URL is required (amqp://user:password@host:5672/vhost)"))
	} else if _, err := amqp.ParseURI(c.URL); err != nil {
		errs = append(errs, fmt.Errorf("URL %s is not an AMQP URI: %w", redactURL(c.URL), err))
	} else if _, err := c.tlsConfig(); err != nil {
		errs = append(errs, err)
	}
	if c.QueueType != QueueTypeClassic && c.QueueType != QueueTypeQuorum {
		errs = append(errs, fmt.Errorf("QueueType %q must be %q or %q", c.QueueType, QueueTypeClassic, QueueTypeQuorum))
	}
	if c.DeliveryLimit < 1 {
		errs = append(errs, fmt.Errorf("DeliveryLimit %d must be at least 1", c.DeliveryLimit))
	}
	if c.Heartbeat < time.Second {
		// amqp091-go treats an interval under one second as "use the server's", which would
		// silently change failure detection.
		errs = append(errs, fmt.Errorf("Heartbeat %s must be at least 1s", c.Heartbeat))
	}
	if c.DialTimeout <= 0 {
		errs = append(errs, fmt.Errorf("DialTimeout %s must be positive", c.DialTimeout))
	}
	if c.ReconnectBackoffMin <= 0 || c.ReconnectBackoffMax < c.ReconnectBackoffMin {
		errs = append(errs, fmt.Errorf("ReconnectBackoffMin %s must be positive and at most ReconnectBackoffMax %s",
			c.ReconnectBackoffMin, c.ReconnectBackoffMax))
	}
	if c.PublishChannels < 1 {
		errs = append(errs, fmt.Errorf("PublishChannels %d must be at least 1", c.PublishChannels))
	}
	if len(errs) > 0 {
		return fmt.Errorf("amqptransport: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// redactURL returns rawURL with its password masked, or a placeholder when it does not parse
// (an unparseable URL might still contain a password).
func redactURL(rawURL string) string { return secrets.Redact(rawURL) }

package coordinator

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/sagacoord/sagacoord/internal/auth"
	"github.com/sagacoord/sagacoord/internal/console"
)

// listenConsole listens on ConsoleAddr, over TLS with the API's certificate and client CAs when
// TLS is on, so that a taken address fails the start. The console serves once the engine runs
// (serveConsole).
func (c *Coordinator) listenConsole() error {
	cfg := c.cfg
	if cfg.ConsoleAddr == "" {
		return nil
	}
	lis, err := net.Listen("tcp", cfg.ConsoleAddr)
	if err != nil {
		return fmt.Errorf("listen on %s (console): %w", cfg.ConsoleAddr, err)
	}
	if cfg.TLSCertFile != "" {
		tlsCfg, err := auth.ServerTLS(auth.TLSFiles{CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile,
			ClientCAFile: cfg.TLSClientCAFile, RequireClientCert: cfg.TLSRequireClientCert}, cfg.Logger)
		if err != nil {
			_ = lis.Close()
			return err
		}
		tlsCfg.NextProtos = []string{"h2", "http/1.1"}
		lis = tls.NewListener(lis, tlsCfg)
	}
	c.consoleLis = lis
	return nil
}

// serveConsole serves the console on the listener of listenConsole, with the API's credentials
// and rate limiter.
func (c *Coordinator) serveConsole(creds *auth.CredentialsFile) {
	if c.consoleLis == nil {
		return
	}
	h := console.New(console.Config{Engine: c.engine, Credentials: creds, Secure: c.cfg.TLSCertFile != "",
		TraceURL: c.cfg.ConsoleTraceURL, RabbitAPI: c.cfg.ConsoleRabbitAPI, VHost: console.VHostOf(c.cfg.AMQPURL), Limiter: c.limiter, Logger: c.cfg.Logger})
	c.console = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		// Handshake errors (a browser that dropped a connection) are not worth a line of stderr.
		ErrorLog: slog.NewLogLogger(c.cfg.Logger.Handler(), slog.LevelDebug)}
	lis := c.consoleLis
	go func() { _ = c.console.Serve(lis) }()
	c.cfg.Logger.Info("console serving", "addr", lis.Addr().String(), "tls", c.cfg.TLSCertFile != "")
}

// ConsoleAddr returns the console's address, or "" when it is off.
func (c *Coordinator) ConsoleAddr() string {
	if c.consoleLis == nil {
		return ""
	}
	return c.consoleLis.Addr().String()
}

// stopConsole ends the console's requests, event streams included, within a second.
func (c *Coordinator) stopConsole() {
	if c.console != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if c.console.Shutdown(ctx) != nil {
			_ = c.console.Close()
		}
		return
	}
	if c.consoleLis != nil {
		_ = c.consoleLis.Close()
	}
}

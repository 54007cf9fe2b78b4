package amqptransport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
)

// The query parameters of an amqps:// URL that configure TLS, as RabbitMQ's URI query parameter
// specification names them: PEM files of the CA that signs the broker's certificate, and of the
// client certificate and its key; and the name the broker's certificate must carry when it is not
// the URL's host.
const (
	paramCACertFile = "cacertfile"
	paramCertFile   = "certfile"
	paramKeyFile    = "keyfile"
	paramServerName = "server_name_indication"
)

var tlsParams = []string{paramCACertFile, paramCertFile, paramKeyFile, paramServerName}

// tlsConfig returns the TLS configuration of a connection to c.URL: nil for an amqp:// URL, a
// clone of c.TLS when it is set, else one made from the URL's query parameters (the system's
// roots when it names no CA). The broker's certificate is always verified, against the URL's host
// unless a server name is given. Files are read on every call, so a connection made after a
// certificate was renewed on disk uses the new one.
func (c Config) tlsConfig() (*tls.Config, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("URL %s: %w", redactURL(c.URL), err)
	}
	q := u.Query()
	var given []string
	for _, p := range tlsParams {
		if q.Has(p) {
			given = append(given, p)
		}
	}
	if u.Scheme != "amqps" {
		if c.TLS != nil || len(given) > 0 {
			return nil, fmt.Errorf("URL %s is amqp:// (plain TCP) but TLS is configured (Config.TLS or the URL's %v): use amqps://, whose default port is 5671", redactURL(c.URL), given)
		}
		return nil, nil
	}
	if c.TLS != nil {
		if len(given) > 0 {
			return nil, fmt.Errorf("URL %s: give Config.TLS or the URL's TLS parameters %v, not both", redactURL(c.URL), given)
		}
		cfg := c.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		return cfg, nil
	}
	return tlsFromFiles(q.Get(paramCACertFile), q.Get(paramCertFile), q.Get(paramKeyFile), serverName(q, u))
}

func serverName(q url.Values, u *url.URL) string {
	if name := q.Get(paramServerName); name != "" {
		return name
	}
	return u.Hostname()
}

// tlsFromFiles builds a TLS configuration from PEM files: caFile (empty: the system's roots) and
// the client certificate certFile with its key keyFile (both or neither).
func tlsFromFiles(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	var errs []error
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("URL %s: %w", paramCACertFile, err))
		default:
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("URL %s %s holds no PEM certificate: give the CA certificate that signs the broker's", paramCACertFile, caFile))
			}
		}
	}
	switch {
	case certFile != "" && keyFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("URL %s %s and %s %s: %w", paramCertFile, certFile, paramKeyFile, keyFile, err))
		}
		cfg.Certificates = []tls.Certificate{cert}
	case certFile != "" || keyFile != "":
		errs = append(errs, fmt.Errorf("URL has only one of %s and %s: give both, the client certificate and its private key", paramCertFile, paramKeyFile))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

package coordinator

import (
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sagacoord/sagacoord/internal/auth"
)

// validateSecurity reports every problem of the API's TLS and authentication settings at once.
// An address that is not loopback needs TLS and credentials, or Insecure.
func (c Config) validateSecurity() error {
	tlsOn := c.TLSCertFile != "" || c.TLSKeyFile != ""
	var errs []error
	if tlsOn && (c.TLSCertFile == "" || c.TLSKeyFile == "") {
		errs = append(errs, errors.New("TLS needs both a certificate and its key: set --tls-cert and --tls-key"))
	}
	if c.TLSClientCAFile != "" && !tlsOn {
		errs = append(errs, errors.New("--tls-client-ca needs TLS: set --tls-cert and --tls-key"))
	}
	if c.TLSClientCAFile != "" && c.CredentialsFile == "" {
		errs = append(errs, errors.New("--tls-client-ca needs --credentials-file, which gives certificate identities their roles"))
	}
	if c.TLSRequireClientCert && c.TLSClientCAFile == "" {
		errs = append(errs, errors.New("--tls-require-client-cert needs --tls-client-ca, the CAs that verify client certificates"))
	}
	if c.CredentialsFile != "" && !tlsOn {
		errs = append(errs, errors.New("--credentials-file needs TLS (--tls-cert and --tls-key): bearer tokens must not travel in plaintext"))
	}
	for _, a := range []struct{ what, addr string }{{"listen address", c.ListenAddr}, {"console address", c.ConsoleAddr}} {
		if a.addr == "" || c.Insecure || loopback(a.addr) || (tlsOn && c.CredentialsFile != "") {
			continue
		}
		missing := "--credentials-file"
		if !tlsOn {
			missing = "--tls-cert, --tls-key and " + missing
		}
		errs = append(errs, fmt.Errorf("%s %s is not a loopback address, and without TLS and credentials anyone "+
			"who reaches it could start, abort and retry sagas: set %s (README.md, section Production), or pass --insecure "+
			"to serve it unprotected on a network you trust (local use only)", a.what, a.addr, missing))
	}
	return errors.Join(errs...)
}

// loopback reports whether the listen address is reachable from this machine only. A host name
// other than localhost counts as reachable from elsewhere, as does an empty host (every
// interface).
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// apiSecurity returns the gRPC server options of the API's TLS and the credentials file the
// server's guard checks calls against; nil when they are off.
func apiSecurity(cfg Config) ([]grpc.ServerOption, *auth.CredentialsFile, error) {
	var (
		opts  []grpc.ServerOption
		creds *auth.CredentialsFile
	)
	if cfg.TLSCertFile != "" {
		tlsCfg, err := auth.ServerTLS(auth.TLSFiles{CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile,
			ClientCAFile: cfg.TLSClientCAFile, RequireClientCert: cfg.TLSRequireClientCert}, cfg.Logger)
		if err != nil {
			return nil, nil, err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	if cfg.CredentialsFile != "" {
		var err error
		if creds, err = auth.LoadCredentialsFile(cfg.CredentialsFile, cfg.Logger); err != nil {
			return nil, nil, err
		}
	}
	logSecurity(cfg)
	return opts, creds, nil
}

// logSecurity says at start how the API is protected.
func logSecurity(cfg Config) {
	clientCerts := "off"
	if cfg.TLSClientCAFile != "" {
		clientCerts = "verified when given"
		if cfg.TLSRequireClientCert {
			clientCerts = "required"
		}
	}
	cfg.Logger.Info("API security", "tls", cfg.TLSCertFile != "", "client_certificates", clientCerts,
		"credentials_file", cfg.CredentialsFile, "reflection", cfg.Reflection)
	if cfg.CredentialsFile == "" && !loopback(cfg.ListenAddr) {
		cfg.Logger.Warn("the API is served without credentials on an address that is not loopback (--insecure): anyone who reaches it may call every method",
			"addr", cfg.ListenAddr)
	}
}

package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// TLSFiles name the files of the API's TLS.
type TLSFiles struct {
	// CertFile and KeyFile are the server's certificate (PEM, with its intermediates) and key.
	// Both are required; they are read again when either changes.
	CertFile, KeyFile string
	// ClientCAFile, when set, is a PEM bundle of the CAs whose client certificates the server
	// accepts; a verified certificate's subject common name is the caller. Read at start only.
	ClientCAFile string
	// RequireClientCert refuses connections without such a certificate; otherwise one is
	// verified when given (callers may use a bearer token instead).
	RequireClientCert bool
}

// ServerTLS returns the API's TLS configuration. The certificate is re-read at a handshake after
// its files changed, so a rotated certificate needs no restart; files that do not load (a
// rotation half done) are logged and the previous certificate stays in use.
func ServerTLS(f TLSFiles, log *slog.Logger) (*tls.Config, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kp := &keyPair{certFile: f.CertFile, keyFile: f.KeyFile, log: log}
	if err := kp.load(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.get}
	if f.ClientCAFile != "" {
		pem, err := os.ReadFile(f.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA file %s: no PEM certificate in it", f.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if f.RequireClientCert {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	} else if f.RequireClientCert {
		return nil, errors.New("a client certificate can only be required with a client CA to verify it")
	}
	return cfg, nil
}

// keyPair is the server's certificate and key, re-read when their files change.
type keyPair struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamps  [2]fileStamp
	lastErr string
}

// load reads both files; the error names the file that failed.
func (k *keyPair) load() error {
	var stamps [2]fileStamp
	for i, path := range []string{k.certFile, k.keyFile} {
		var err error
		if stamps[i], err = stampOf(path); err != nil {
			return fmt.Errorf("TLS certificate: %w", err)
		}
	}
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate %s with key %s: %w", k.certFile, k.keyFile, err)
	}
	k.cert, k.stamps = &cert, stamps
	return nil
}

// get is tls.Config.GetCertificate: the current certificate, re-read first if its files changed.
func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cs, errC := stampOf(k.certFile)
	ks, errK := stampOf(k.keyFile)
	if errC == nil && errK == nil && cs.same(k.stamps[0]) && ks.same(k.stamps[1]) {
		return k.cert, nil
	}
	err := errors.Join(errC, errK)
	if err == nil {
		err = k.load() // changes nothing when it fails
	}
	if err != nil {
		if msg := err.Error(); msg != k.lastErr {
			k.lastErr = msg
			k.log.Warn("TLS certificate files changed but do not load; serving the previous certificate", "err", msg)
		}
		return k.cert, nil
	}
	k.lastErr = ""
	if leaf := k.cert.Leaf; leaf != nil {
		k.log.Info("TLS certificate reloaded", "file", k.certFile, "subject", leaf.Subject.String(), "not_after", leaf.NotAfter)
	}
	return k.cert, nil
}

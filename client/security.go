package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TLS says how a connection verifies the coordinator, and how the client proves who it is to a
// coordinator that checks client certificates (docs/api.md, section Roles).
type TLS struct {
	// CAFile is a PEM file of the CAs that may sign the coordinator's certificate; empty means
	// the system's roots.
	CAFile string
	// CertFile and KeyFile are a client certificate and its key (PEM); both or neither. The
	// certificate's subject common name is the caller's identity.
	CertFile, KeyFile string
	// ServerName is the name the coordinator's certificate must hold; empty means the host of the
	// address dialled.
	ServerName string
}

// WithTLS returns the dial option of a TLS connection as t says, for New. Its error names the
// file that could not be used.
func WithTLS(t TLS) (grpc.DialOption, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", t.CAFile)
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("a client certificate needs both its certificate file and its key file")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s with key %s: %w", t.CertFile, t.KeyFile, err)
		}
		// Presented whatever CAs the coordinator names as acceptable, so that a certificate of
		// the wrong CA is refused by the coordinator with its reason, not silently left out.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}

// WithToken returns the dial option that sends token as a bearer token with every call, for New.
// gRPC refuses to send it over a connection without TLS (WithTLS): a token must not travel in
// plaintext.
func WithToken(token string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(bearer(token))
}

// ReadTokenFile reads a bearer token from a file: its content without the whitespace around it
// (a final newline, say). An empty file is an error.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return token, nil
}

// bearer is a token sent in the authorization metadata of every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

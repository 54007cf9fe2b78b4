package sandbox

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// validity is how long the certificates of a sandbox are valid: longer than any test or demo.
const validity = 7 * 24 * time.Hour

// CA is the certificate authority of a sandbox: it signs the certificates of the servers and the
// clients, and its certificate (CertFile) is what both sides trust. Its key never leaves memory.
type CA struct {
	// CertFile is the CA certificate, PEM: the sslrootcert of a PostgreSQL URL and the
	// cacertfile of an AMQP URL.
	CertFile string
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
}

// Pair is a certificate and its private key, each a PEM file.
type Pair struct {
	CertFile, KeyFile string
}

// NewCA makes a CA and writes its certificate to dir/ca.pem.
func NewCA(dir string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sandbox CA: generate key: %w", err)
	}
	tmpl := template(pkix.Name{CommonName: "sagacoord sandbox CA"})
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sandbox CA: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{CertFile: filepath.Join(dir, "ca.pem"), cert: cert, key: key}
	if err := writePEM(ca.CertFile, "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// Server issues a server certificate for localhost, 127.0.0.1 and ::1, written to
// dir/name.pem and dir/name.key.
func (ca *CA) Server(dir, name string) (Pair, error) {
	tmpl := template(pkix.Name{CommonName: "localhost"})
	tmpl.DNSNames = []string{"localhost"}
	tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	return ca.issue(dir, name, tmpl)
}

// Client issues a client certificate whose common name is user (PostgreSQL's cert
// authentication and RabbitMQ's EXTERNAL mechanism read the user from it), written to
// dir/name.pem and dir/name.key.
func (ca *CA) Client(dir, name, user string) (Pair, error) {
	tmpl := template(pkix.Name{CommonName: user})
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return ca.issue(dir, name, tmpl)
}

func (ca *CA) issue(dir, name string, tmpl *x509.Certificate) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, fmt.Errorf("sandbox certificate %s: generate key: %w", name, err)
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Pair{}, fmt.Errorf("sandbox certificate %s: sign: %w", name, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Pair{}, err
	}
	p := Pair{CertFile: filepath.Join(dir, name+".pem"), KeyFile: filepath.Join(dir, name+".key")}
	if err := writePEM(p.CertFile, "CERTIFICATE", der, 0o644); err != nil {
		return Pair{}, err
	}
	return p, writePEM(p.KeyFile, "EC PRIVATE KEY", keyDER, 0o600)
}

func template(subject pkix.Name) *x509.Certificate {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	now := time.Now()
	return &x509.Certificate{SerialNumber: serial, Subject: subject, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity)}
}

func writePEM(path, kind string, der []byte, mode os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("sandbox: write %s: %w", path, err)
	}
	return nil
}

package cli

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"

	"github.com/sagacoord/sagacoord/client"
)

// Environment variables of the security flags. The client certificate's are not SAGACOORD_TLS_*,
// which the coordinator reads for its own certificate.
const (
	TLSEnv           = "SAGACOORD_TLS"
	TLSCAEnv         = "SAGACOORD_TLS_CA"
	ClientCertEnv    = "SAGACOORD_CLIENT_CERT"
	ClientKeyEnv     = "SAGACOORD_CLIENT_KEY"
	TLSServerNameEnv = "SAGACOORD_TLS_SERVER_NAME"
	TokenFileEnv     = "SAGACOORD_TOKEN_FILE"
)

// security is how App's connection is protected: the global flags --tls, --tls-ca,
// --tls-cert, --tls-key, --tls-server-name and --token-file.
type security struct {
	tls       bool
	tlsFiles  client.TLS
	tokenFile string
}

// securityFlags registers the security flags on the root's persistent flags, with defaults from
// the environment.
func securityFlags(pf *pflag.FlagSet, s *security, getenv func(string) string) {
	on, _ := strconv.ParseBool(getenv(TLSEnv))
	pf.BoolVar(&s.tls, "tls", on, "connect over TLS, verifying the coordinator against the system's roots unless --tls-ca ($"+TLSEnv+")")
	pf.StringVar(&s.tlsFiles.CAFile, "tls-ca", getenv(TLSCAEnv), "connect over TLS, verifying the coordinator against the CA certificates of this PEM file ($"+TLSCAEnv+")")
	pf.StringVar(&s.tlsFiles.CertFile, "tls-cert", getenv(ClientCertEnv), "client certificate (PEM) for a coordinator that verifies them; implies TLS ($"+ClientCertEnv+")")
	pf.StringVar(&s.tlsFiles.KeyFile, "tls-key", getenv(ClientKeyEnv), "the key of --tls-cert (PEM) ($"+ClientKeyEnv+")")
	pf.StringVar(&s.tlsFiles.ServerName, "tls-server-name", getenv(TLSServerNameEnv), "the name the coordinator's certificate must hold, when --addr is another ($"+TLSServerNameEnv+")")
	pf.StringVar(&s.tokenFile, "token-file", getenv(TokenFileEnv), "send the bearer token in this file with every call; needs TLS ($"+TokenFileEnv+")")
}

// on reports whether the connection uses TLS.
func (s *security) on() bool {
	return s.tls || s.tlsFiles.CAFile != "" || s.tlsFiles.CertFile != "" || s.tlsFiles.ServerName != ""
}

// dialOptions returns the dial options of the flags. Its errors are usage errors that name the
// flag.
func (s *security) dialOptions() ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if s.on() {
		o, err := client.WithTLS(s.tlsFiles)
		if err != nil {
			return nil, UsageErrorf("TLS flags (--tls-ca, --tls-cert, --tls-key): %v", err)
		}
		opts = append(opts, o)
	}
	if s.tokenFile != "" {
		if !s.on() {
			return nil, UsageErrorf("--token-file needs TLS (--tls-ca, or --tls for the system's roots): a token must not travel in plaintext")
		}
		token, err := client.ReadTokenFile(s.tokenFile)
		if err != nil {
			return nil, UsageErrorf("--token-file: %v", err)
		}
		opts = append(opts, client.WithToken(token))
	}
	return opts, nil
}

// validFor finds the names in Go's "x509: certificate is valid for a, b, not c".
var validFor = regexp.MustCompile(`certificate is valid for (.*), not ([^"]*)`)

// tlsProblem turns the message of a connection that failed during its TLS handshake into what
// to check, or returns false for any other failure. With TLS 1.3 the coordinator checks a client
// certificate after the client's side of the handshake is done, so its refusal comes as an alert
// or, when the client wrote first, as a closed connection: both name the client certificate.
func (s *security) tlsProblem(msg string) (string, bool) {
	const refused = "the coordinator refused the client certificate --tls-cert"
	hasCert := s.tlsFiles.CertFile != ""
	closed := strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset by peer") || strings.Contains(msg, "error reading server preface: EOF")
	switch {
	case strings.Contains(msg, "certificate signed by unknown authority"):
		if s.tlsFiles.CAFile != "" {
			return "the coordinator's certificate is not signed by a CA of --tls-ca " + s.tlsFiles.CAFile + ": give the CA certificate that signed it", true
		}
		return "the coordinator's certificate is signed by an authority this machine does not trust: give the CA certificate that signed it with --tls-ca ($" + TLSCAEnv + ")", true
	case validFor.MatchString(msg):
		m := validFor.FindStringSubmatch(msg)
		return "the coordinator's certificate is valid for " + m[1] + ", not for " + m[2] + " that was dialled: use one of its names in --addr, or give it with --tls-server-name", true
	case strings.Contains(msg, "doesn't contain any IP SANs"), strings.Contains(msg, "not valid for any names"):
		return "the coordinator's certificate holds no name for the address dialled: use a name it holds in --addr, or give it with --tls-server-name (" + lastPart(msg) + ")", true
	case strings.Contains(msg, "certificate has expired or is not yet valid"):
		return "the coordinator's certificate has expired or is not valid yet (" + lastPart(msg) + "): renew it (the coordinator picks up new files without a restart), or check the clocks", true
	case !hasCert && (strings.Contains(msg, "tls: certificate required") || strings.Contains(msg, "remote error: tls: handshake failure") || s.on() && closed):
		return "the coordinator requires a client certificate: give one with --tls-cert and --tls-key ($" + ClientCertEnv + ", $" + ClientKeyEnv + ")", true
	case strings.Contains(msg, "remote error: tls: unknown certificate authority"):
		return refused + ": it does not trust the CA that signed it; use one signed by a CA of the coordinator's --tls-client-ca", true
	case strings.Contains(msg, "remote error: tls: expired certificate"):
		return refused + ": it has expired or is not valid yet; renew it", true
	case strings.Contains(msg, "remote error: tls: bad certificate"), hasCert && (closed || strings.Contains(msg, "tls: certificate required")):
		return refused + ": check that a CA of its --tls-client-ca signed it, that it is valid now, and that it is made for client authentication (extended key usage clientAuth)", true
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "the coordinator does not speak TLS on this address: leave out the TLS flags, or check --addr", true
	case !s.on() && strings.Contains(msg, "error reading server preface"):
		return "the coordinator closed the connection before answering; if it serves TLS, connect with --tls-ca (or --tls) (" + lastPart(msg) + ")", true
	}
	return "", false
}

// lastPart keeps the end of a wrapped error message: what follows its last ": ".
func lastPart(msg string) string {
	msg = strings.TrimSuffix(msg, `"`)
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return msg[i+2:]
	}
	return msg
}

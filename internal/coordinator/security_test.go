package coordinator

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:7233": true, "127.0.0.2:7233": true, "[::1]:7233": true, "localhost:7233": true,
		"0.0.0.0:7233": false, ":7233": false, "[::]:7233": false, "10.0.0.5:7233": false,
		"coordinator.example.com:7233": false, "no-port": false,
	} {
		require.Equal(t, want, loopback(addr), addr)
	}
}

// The API's security settings are checked together, every problem reported at once, and a
// listen address open to the network needs TLS and credentials or --insecure.
func TestSecuritySettings(t *testing.T) {
	t.Parallel()
	tls := func(c *Config) { c.TLSCertFile, c.TLSKeyFile = "tls.crt", "tls.key" }
	for _, tt := range []struct {
		name string
		set  func(*Config)
		want []string // in the error, each; none: valid
		n    int      // problems reported
	}{
		{"loopback without anything", func(c *Config) {}, nil, 0},
		{"every interface refused", func(c *Config) { c.ListenAddr = "0.0.0.0:7233" },
			[]string{"listen address 0.0.0.0:7233 is not a loopback address", "set --tls-cert, --tls-key and --credentials-file", "or pass --insecure"}, 1},
		{"TLS without credentials refused", func(c *Config) { c.ListenAddr = ":7233"; tls(c) }, []string{"set --credentials-file (README.md"}, 1},
		{"TLS and credentials", func(c *Config) { c.ListenAddr = ":7233"; tls(c); c.CredentialsFile = "creds.yaml" }, nil, 0},
		{"insecure", func(c *Config) { c.ListenAddr = "0.0.0.0:7233"; c.Insecure = true }, nil, 0},
		{"console on every interface refused", func(c *Config) { c.ConsoleAddr = "0.0.0.0:8080" },
			[]string{"console address 0.0.0.0:8080 is not a loopback address", "set --tls-cert, --tls-key and --credentials-file"}, 1},
		{"console on loopback", func(c *Config) { c.ConsoleAddr = "127.0.0.1:8080" }, nil, 0},
		{"console with TLS and credentials", func(c *Config) { c.ConsoleAddr = ":8080"; tls(c); c.CredentialsFile = "creds.yaml" }, nil, 0},
		{"console insecure", func(c *Config) { c.ConsoleAddr = "0.0.0.0:8080"; c.Insecure = true }, nil, 0},
		{"credentials without TLS", func(c *Config) { c.CredentialsFile = "creds.yaml" }, []string{"--credentials-file needs TLS"}, 1},
		{"every problem at once", func(c *Config) {
			c.TLSKeyFile, c.TLSClientCAFile, c.TLSRequireClientCert = "tls.key", "ca.pem", false
		}, []string{"set --tls-cert and --tls-key", "--tls-client-ca needs --credentials-file"}, 2},
		{"required client certificate without a CA", func(c *Config) { tls(c); c.TLSRequireClientCert = true },
			[]string{"--tls-require-client-cert needs --tls-client-ca"}, 1},
		{"client CA without TLS", func(c *Config) { c.TLSClientCAFile, c.CredentialsFile = "ca.pem", "creds.yaml" },
			[]string{"--tls-client-ca needs TLS", "--credentials-file needs TLS"}, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{DatabaseURL: "postgres://x", AMQPURL: "amqp://x"}.WithDefaults()
			tt.set(&c)
			err := c.validate()
			if len(tt.want) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
			require.Equal(t, tt.n, strings.Count(err.Error(), "\n")+1, "one line per problem: %v", err)
		})
	}
}

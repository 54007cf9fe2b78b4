package auth_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/auth"
	"github.com/sagacoord/sagacoord/internal/auth/authtest"
)

func TestCredentialsFindTokensAndCertificates(t *testing.T) {
	t.Parallel()
	data := authtest.CredentialsYAML(
		[]authtest.Token{{Name: "ci-bot", Secret: "s3cret-ci", Roles: []string{"submitter"}}, {Name: "dash", Secret: "s3cret-dash", Roles: []string{"reader"}}},
		[]authtest.Cert{{CommonName: "ops-alice", Roles: []string{"operator"}}},
	)
	c, err := auth.ParseCredentials("creds.yaml", []byte(data))
	require.NoError(t, err)

	id, ok := c.Token("s3cret-ci")
	require.True(t, ok)
	require.Equal(t, auth.Identity{Name: "ci-bot", Roles: []auth.Role{auth.RoleSubmitter}}, id)
	id, ok = c.Token("s3cret-dash")
	require.True(t, ok)
	require.Equal(t, "dash", id.Name)
	for _, wrong := range []string{"", "s3cret-c", "s3cret-ci ", authtest.Hash("s3cret-ci")} {
		_, ok = c.Token(wrong)
		require.False(t, ok, "token %q", wrong)
	}

	require.Equal(t, auth.Identity{Name: "ops-alice", Roles: []auth.Role{auth.RoleOperator}}, c.Certificate("ops-alice"))
	require.Empty(t, c.Certificate("ops-bob").Roles, "a certificate the file does not list has no role")
}

// A bad file is refused with the file, the line and what is wrong.
func TestCredentialsFileErrorsNameFileLineAndProblem(t *testing.T) {
	t.Parallel()
	hash := authtest.Hash("x")
	for _, tt := range []struct {
		name, data string
		line       int
		msg        string
	}{
		{"empty", "", 0, "lists no tokens and no certificates"},
		{"empty lists", "tokens:\ncertificates: []\n", 0, "lists no tokens and no certificates"},
		{"not YAML", "tokens: [\n", 1, "not valid YAML"},
		{"top level a list", "- a\n", 1, "want a mapping with tokens and certificates, not a list"},
		{"unknown top key", "token:\n  - name: a\n", 1, "token: unknown key; want tokens, certificates"},
		{"tokens not a list", "tokens: {name: a}\n", 1, "tokens: want a list of entries, not a mapping"},
		{"unknown entry key", "tokens:\n  - name: a\n    sha256: " + hash + "\n    role: [reader]\n", 4, "tokens[0].role: unknown key; want name, sha256, roles"},
		{"missing roles", "tokens:\n  - name: a\n    sha256: " + hash + "\n", 2, "tokens[0]: roles is missing"},
		{"missing sha256", "tokens:\n  - name: a\n    roles: [reader]\n", 2, "tokens[0]: sha256 is missing"},
		{"short hash", "tokens:\n  - name: a\n    sha256: abc123\n    roles: [reader]\n", 3, `tokens[0].sha256: "abc123" is not 64 hex digits`},
		{"unknown role", "tokens:\n  - name: a\n    sha256: " + hash + "\n    roles: [admin]\n", 4, `tokens[0].roles: "admin" is not a role; want reader, submitter or operator`},
		{"roles not a list", "certificates:\n  - common_name: a\n    roles: operator\n", 3, "certificates[0].roles: want a list of at least one role"},
		{"empty name", "tokens:\n  - name: \"\"\n    sha256: " + hash + "\n    roles: [reader]\n", 2, "tokens[0].name: must not be empty"},
		{"reserved name", "certificates:\n  - common_name: anonymous\n    roles: [reader]\n", 2, `"anonymous" is reserved`},
		{"key twice", "tokens:\n  - name: a\n    name: b\n", 3, "tokens[0].name: given twice (first on line 2)"},
		{"duplicate name", "tokens:\n  - {name: a, sha256: " + hash + ", roles: [reader]}\n  - {name: a, sha256: " + authtest.Hash("y") + ", roles: [reader]}\n", 3, "tokens[1]: name is already used by the entry on line 2"},
		{"same token twice", "tokens:\n  - {name: a, sha256: " + hash + ", roles: [reader]}\n  - {name: b, sha256: " + strings.ToUpper(hash) + ", roles: [reader]}\n", 3, "the same token twice"},
		{"duplicate certificate", "certificates:\n  - {common_name: c, roles: [reader]}\n  - {common_name: c, roles: [operator]}\n", 3, "certificates[1]: common_name is already used by the entry on line 2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := auth.ParseCredentials("creds.yaml", []byte(tt.data))
			require.Error(t, err)
			var fe *auth.FileError
			require.True(t, errors.As(err, &fe), "error %v is not a *FileError", err)
			require.Equal(t, "creds.yaml", fe.File)
			require.Equal(t, tt.line, fe.Line, "line of %q", err)
			require.Contains(t, err.Error(), tt.msg)
			require.True(t, strings.HasPrefix(err.Error(), "creds.yaml:"), "error %q starts with the file", err)
		})
	}
}

func FuzzParseCredentials(f *testing.F) {
	f.Add([]byte(authtest.CredentialsYAML([]authtest.Token{{Name: "a", Secret: "x", Roles: []string{"reader"}}}, []authtest.Cert{{CommonName: "c", Roles: []string{"operator"}}})))
	f.Add([]byte("tokens:\n  - name: a\n    name: b\n"))
	f.Add([]byte("certificates: &x [*x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := auth.ParseCredentials("f.yaml", data)
		if err != nil {
			var fe *auth.FileError
			if !errors.As(err, &fe) || fe.File != "f.yaml" {
				t.Fatalf("error %v does not name the file", err)
			}
			return
		}
		_, _ = c.Token("x")
		_ = c.Certificate("c")
	})
}

package secrets

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:secret@db:5432/x", "postgres://u:xxxxx@db:5432/x"},
		{"amqp://guest:secret@127.0.0.1:5672/", "amqp://guest:xxxxx@127.0.0.1:5672/"},
		{"postgres://u@db/x?sslmode=verify-full&password=secret", "postgres://u@db/x?sslmode=verify-full&password=xxxxx"},
		{"postgres://u@db/x?sslkey=/k.pem&SSLPassword=secret&sslcert=/c.pem", "postgres://u@db/x?sslkey=/k.pem&sslpassword=xxxxx&sslcert=/c.pem"},
		{"postgres://u@db/x?pass%77ord=secret", "postgres://u@db/x?password=xxxxx"},
		{"amqps://u:secret@mq:5671/v?cacertfile=/etc/ca.pem", "amqps://u:xxxxx@mq:5671/v?cacertfile=/etc/ca.pem"},
		{"host=db password=secret", "(redacted: not a URL)"},
		{"postgres://u:secret@db:notaport/x", "(redacted: not a URL)"},
	} {
		got := Redact(tc.in)
		require.Equal(t, tc.want, got, "Redact(%q)", tc.in)
		require.NotContains(t, got, "secret", tc.in)
	}
}

func TestReadFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	got, err := ReadFile(write("url", "  amqps://u:secret@mq/v\n"))
	require.NoError(t, err)
	require.Equal(t, "amqps://u:secret@mq/v", got)

	for _, tc := range []struct{ path, want string }{
		{write("empty", "\n"), "is empty"},
		{write("two", "secret\nsecret2\n"), "more than one line"},
		{write("big", strings.Repeat("secret", maxFileBytes)), "larger than"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		_, err := ReadFile(tc.path)
		require.ErrorContains(t, err, tc.want)
		require.ErrorContains(t, err, tc.path, "the error names the file")
		require.NotContains(t, err.Error(), "secret"+"2", "the error never shows the content")
	}
}

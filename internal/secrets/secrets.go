// Package secrets keeps credentials out of logs and errors, and reads them from files: Redact
// masks the passwords of a database or broker URL, and ReadFile reads a secret (a URL with its
// password, say) that an operator keeps in a file rather than on a command line, where every
// user of the machine can read it.
package secrets

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
)

// mask replaces every password that Redact hides, as url.URL.Redacted does.
const mask = "xxxxx"

// passwordParams are the query parameters that carry a password: PostgreSQL's password and
// sslpassword (the passphrase of the client key), compared without case as pgx does.
var passwordParams = []string{"password", "sslpassword"}

// Redact returns raw with every password masked: the userinfo password and the query parameters
// password and sslpassword. A string that is not a URL with a scheme (a keyword/value connection
// string such as "host=db password=..." is one) is not shown at all.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return "(redacted: not a URL)"
	}
	if u.RawQuery != "" {
		u.RawQuery = redactQuery(u.RawQuery)
	}
	return u.Redacted()
}

// redactQuery masks the values of the password parameters of a raw query, leaving the rest of
// it byte for byte.
func redactQuery(raw string) string {
	parts := strings.Split(raw, "&")
	for i, p := range parts {
		key, _, hasValue := strings.Cut(p, "=")
		if k, err := url.QueryUnescape(key); err == nil {
			key = k
		}
		for _, name := range passwordParams {
			if hasValue && strings.EqualFold(key, name) {
				parts[i] = name + "=" + mask
			}
		}
	}
	return strings.Join(parts, "&")
}

// maxFileBytes bounds a secret file: a URL or a password is far smaller, so a larger file is the
// wrong file.
const maxFileBytes = 64 << 10

// ReadFile returns the content of the secret file at path without its surrounding whitespace (a
// file written by `echo` ends with a newline). An empty or oversized file is an error. Errors
// name the file and never its content.
func ReadFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read secret file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("read secret file %s: %w", path, err)
	}
	if len(b) > maxFileBytes {
		return "", fmt.Errorf("secret file %s is larger than %d bytes: it should hold one URL or password", path, maxFileBytes)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("secret file %s is empty: write the secret into it", path)
	}
	if strings.ContainsAny(s, "\r\n") {
		return "", errors.New("secret file " + path + " has more than one line: it should hold one URL or password")
	}
	return s, nil
}

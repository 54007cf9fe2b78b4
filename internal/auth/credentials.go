package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// The credentials file says who may call the API and with which roles (docs/decisions.md,
// decision 29). It is YAML:
//
//	tokens:                  # bearer tokens, by the SHA-256 of the token
//	  - name: ci-bot         # the identity in audit records, logs and traces
//	    sha256: 9f86d0...    # 64 hex digits: printf %s "$TOKEN" | sha256sum
//	    roles: [submitter]
//	certificates:            # client certificates, by their subject common name
//	  - common_name: ops-alice
//	    roles: [operator]
//
// The file holds no secret: a token is known by its hash alone.

// Credentials is a parsed credentials file.
type Credentials struct {
	tokens []tokenEntry
	certs  map[string][]Role
}

type tokenEntry struct {
	id   Identity
	hash [sha256.Size]byte
}

// Token returns the identity whose token is token. It hashes token and compares the hash with
// every entry in constant time, so the time taken tells nothing of how close a guess was.
func (c *Credentials) Token(token string) (Identity, bool) {
	h := sha256.Sum256([]byte(token))
	var (
		found Identity
		ok    bool
	)
	for _, e := range c.tokens {
		if subtle.ConstantTimeCompare(h[:], e.hash[:]) == 1 {
			found, ok = e.id, true
		}
	}
	return found, ok
}

// Certificate returns the identity of a verified client certificate with this subject common
// name: its roles from the file, none when the file does not list it.
func (c *Credentials) Certificate(commonName string) Identity {
	return Identity{Name: commonName, Roles: c.certs[commonName]}
}

// FileError is a problem of a credentials file: the file, the line (0 when unknown) and what is
// wrong, starting with the entry's path (tokens[1].sha256).
type FileError struct {
	File string
	Line int
	Msg  string
}

func (e *FileError) Error() string {
	if e.Line > 0 {
		return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg
	}
	return e.File + ": " + e.Msg
}

// maxNameBytes bounds a name in the file; it is stored in every audit record.
const maxNameBytes = 128

// yamlLine finds the line in yaml.v3's syntax errors ("yaml: line 3: ...").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// ParseCredentials parses a credentials file; file names it in errors. Every entry needs a name
// (or common name) and at least one role; a file that lets nobody in is refused.
func ParseCredentials(file string, data []byte) (*Credentials, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := err.Error()
		line := 0
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = msg[len(m[0]):]
		}
		return nil, &FileError{File: file, Line: line, Msg: "not valid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
	}
	p := &credentialsParser{file: file, out: &Credentials{certs: map[string][]Role{}}, seen: map[string]int{}}
	if err := p.document(&doc); err != nil {
		return nil, err
	}
	if len(p.out.tokens) == 0 && len(p.out.certs) == 0 {
		return nil, &FileError{File: file, Msg: "lists no tokens and no certificates, so nobody could call the coordinator; add entries (docs/api.md#roles)"}
	}
	return p.out, nil
}

// credentialsParser walks the YAML node tree, so that every error can name its line.
type credentialsParser struct {
	file string
	out  *Credentials
	// seen maps "token name", "hash" and "certificate" keys to the line of their first entry.
	seen map[string]int
}

func (p *credentialsParser) errorf(n *yaml.Node, format string, args ...any) error {
	return &FileError{File: p.file, Line: n.Line, Msg: fmt.Sprintf(format, args...)}
}

func (p *credentialsParser) document(doc *yaml.Node) error {
	if len(doc.Content) == 0 {
		return nil // empty: ParseCredentials says nobody could call
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return p.errorf(top, "want a mapping with tokens and certificates, not %s", kindName(top))
	}
	return p.mapping(top, "", []string{"tokens", "certificates"}, func(key string, v *yaml.Node) error {
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			return nil // "tokens:" with nothing after it: no entries
		}
		if v.Kind != yaml.SequenceNode {
			return p.errorf(v, "%s: want a list of entries, not %s", key, kindName(v))
		}
		for i, item := range v.Content {
			path := key + "[" + strconv.Itoa(i) + "]"
			var err error
			if key == "tokens" {
				err = p.token(path, item)
			} else {
				err = p.certificate(path, item)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// mapping calls fn for each entry of mapping n, refusing keys outside allowed and keys given
// twice.
func (p *credentialsParser) mapping(n *yaml.Node, path string, allowed []string, fn func(key string, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return p.errorf(n, "%s: want a mapping of %s, not %s", path, strings.Join(allowed, ", "), kindName(n))
	}
	prefix := path
	if prefix != "" {
		prefix += "."
	}
	lines := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || !slices.Contains(allowed, k.Value) {
			return p.errorf(k, "%s%s: unknown key; want %s", prefix, k.Value, strings.Join(allowed, ", "))
		}
		if first, dup := lines[k.Value]; dup {
			return p.errorf(k, "%s%s: given twice (first on line %d)", prefix, k.Value, first)
		}
		lines[k.Value] = k.Line
		if err := fn(prefix+k.Value, v); err != nil {
			return err
		}
	}
	return nil
}

func (p *credentialsParser) token(path string, n *yaml.Node) error {
	var (
		name, sum string
		roles     []Role
		hashNode  *yaml.Node
	)
	err := p.mapping(n, path, []string{"name", "sha256", "roles"}, func(key string, v *yaml.Node) error {
		var err error
		switch {
		case strings.HasSuffix(key, ".name"):
			name, err = p.name(key, v)
		case strings.HasSuffix(key, ".sha256"):
			sum, hashNode, err = v.Value, v, p.scalar(key, v)
		default:
			roles, err = p.roles(key, v)
		}
		return err
	})
	if err != nil {
		return err
	}
	if err := p.required(n, path, map[string]bool{"name": name != "", "sha256": hashNode != nil, "roles": roles != nil}); err != nil {
		return err
	}
	b, err := hex.DecodeString(sum)
	if err != nil || len(b) != sha256.Size {
		return p.errorf(hashNode, "%s.sha256: %q is not 64 hex digits; write the SHA-256 of the token (printf %%s \"$TOKEN\" | sha256sum)", path, sum)
	}
	var h [sha256.Size]byte
	copy(h[:], b)
	if err := p.unique(n, path, "token name", name, "name"); err != nil {
		return err
	}
	if err := p.unique(hashNode, path, "token hash", hex.EncodeToString(h[:]), "sha256 (the same token twice)"); err != nil {
		return err
	}
	p.out.tokens = append(p.out.tokens, tokenEntry{id: Identity{Name: name, Roles: roles}, hash: h})
	return nil
}

func (p *credentialsParser) certificate(path string, n *yaml.Node) error {
	var (
		cn    string
		roles []Role
	)
	err := p.mapping(n, path, []string{"common_name", "roles"}, func(key string, v *yaml.Node) error {
		var err error
		if strings.HasSuffix(key, ".common_name") {
			cn, err = p.name(key, v)
		} else {
			roles, err = p.roles(key, v)
		}
		return err
	})
	if err != nil {
		return err
	}
	if err := p.required(n, path, map[string]bool{"common_name": cn != "", "roles": roles != nil}); err != nil {
		return err
	}
	if err := p.unique(n, path, "certificate", cn, "common_name"); err != nil {
		return err
	}
	p.out.certs[cn] = roles
	return nil
}

// required reports the first of the keys an entry lacks.
func (p *credentialsParser) required(n *yaml.Node, path string, have map[string]bool) error {
	for _, key := range []string{"name", "common_name", "sha256", "roles"} {
		if set, asked := have[key]; asked && !set {
			return p.errorf(n, "%s: %s is missing", path, key)
		}
	}
	return nil
}

// unique records key as used by the entry at n, or reports the entry that used it first.
func (p *credentialsParser) unique(n *yaml.Node, path, kind, key, field string) error {
	if first, dup := p.seen[kind+"\x00"+key]; dup {
		return p.errorf(n, "%s: %s is already used by the entry on line %d", path, field, first)
	}
	p.seen[kind+"\x00"+key] = n.Line
	return nil
}

func (p *credentialsParser) scalar(path string, v *yaml.Node) error {
	if v.Kind != yaml.ScalarNode {
		return p.errorf(v, "%s: want a string, not %s", path, kindName(v))
	}
	return nil
}

// name checks a token's name or a certificate's common name: printable text that the audit
// records and logs show as it is.
func (p *credentialsParser) name(path string, v *yaml.Node) (string, error) {
	if err := p.scalar(path, v); err != nil {
		return "", err
	}
	s := v.Value
	switch {
	case s == "":
		return "", p.errorf(v, "%s: must not be empty", path)
	case len(s) > maxNameBytes:
		return "", p.errorf(v, "%s: is %d bytes long; the limit is %d", path, len(s), maxNameBytes)
	case strings.TrimSpace(s) != s || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return "", p.errorf(v, "%s: %q has spaces at its ends or characters that are not printable", path, s)
	case s == anonymous:
		return "", p.errorf(v, "%s: %q is reserved for calls to a coordinator without authentication", path, s)
	}
	return s, nil
}

func (p *credentialsParser) roles(path string, v *yaml.Node) ([]Role, error) {
	if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
		return nil, p.errorf(v, "%s: want a list of at least one role (%s)", path, roleNames())
	}
	roles := make([]Role, 0, len(v.Content))
	for _, r := range v.Content {
		if r.Kind != yaml.ScalarNode || !Role(r.Value).Valid() {
			return nil, p.errorf(r, "%s: %q is not a role; want %s", path, r.Value, roleNames())
		}
		roles = append(roles, Role(r.Value))
	}
	return roles, nil
}

func roleNames() string { return "reader, submitter or operator" }

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias (anchors and aliases are not supported here)"
	}
	return fmt.Sprintf("the value %q", n.Value)
}

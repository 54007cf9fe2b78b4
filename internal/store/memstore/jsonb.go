package memstore

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Limits of PostgreSQL's numeric, which holds jsonb's numbers: decimal digits before the point
// and after it.
const (
	numericMaxIntDigits = 131072
	numericMaxScale     = 16383
)

// jsonb returns the text a jsonb column holds for the JSON document doc, as pgx reads it back:
// object keys sorted (shorter first, then bytewise) with only the last of duplicate keys kept,
// numbers in numeric's form (1E2 is 100, 1.50 stays 1.50), ", " and ": " between elements and
// strings escaped again. Callers then read values that went through the same normalization as
// in PostgreSQL (a json.RawMessage in a state comes back changed alike).
//
// It refuses, with store.ErrInvalidData, what jsonb refuses: a NUL or bytes that are not UTF-8,
// the escape \u0000, an unpaired UTF-16 surrogate, a number outside numeric's range, or text that
// is not JSON.
func jsonb(doc []byte) ([]byte, error) {
	if err := checkText("JSON", string(doc)); err != nil {
		return nil, err
	}
	p := &jsonbParser{in: doc}
	out, err := p.value(nil)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos != len(p.in) {
		return nil, p.syntax()
	}
	return out, nil
}

// jsonbParser reads a JSON document and writes it as jsonb prints it.
type jsonbParser struct {
	in  []byte
	pos int
}

func (p *jsonbParser) syntax() error {
	return refused("invalid input syntax for type json at offset %d", p.pos)
}

func (p *jsonbParser) skipSpace() {
	for p.pos < len(p.in) && strings.IndexByte(" \t\r\n", p.in[p.pos]) >= 0 {
		p.pos++
	}
}

// peek returns the next byte after white space, or 0 at the end.
func (p *jsonbParser) peek() byte {
	p.skipSpace()
	if p.pos >= len(p.in) {
		return 0
	}
	return p.in[p.pos]
}

// value appends the value at the reader's position to out.
func (p *jsonbParser) value(out []byte) ([]byte, error) {
	switch c := p.peek(); c {
	case '{':
		return p.object(out)
	case '[':
		return p.array(out)
	case '"':
		s, err := p.string()
		if err != nil {
			return nil, err
		}
		return appendString(out, s), nil
	case 't', 'f', 'n':
		for _, lit := range []string{"true", "false", "null"} {
			if bytes.HasPrefix(p.in[p.pos:], []byte(lit)) {
				p.pos += len(lit)
				return append(out, lit...), nil
			}
		}
		return nil, p.syntax()
	default:
		return p.number(out)
	}
}

func (p *jsonbParser) object(out []byte) ([]byte, error) {
	p.pos++ // {
	type member struct {
		key string
		val []byte
	}
	var members []member
	for p.peek() != '}' {
		if len(members) > 0 {
			if p.peek() != ',' {
				return nil, p.syntax()
			}
			p.pos++
		}
		if p.peek() != '"' {
			return nil, p.syntax()
		}
		key, err := p.string()
		if err != nil {
			return nil, err
		}
		if p.peek() != ':' {
			return nil, p.syntax()
		}
		p.pos++
		val, err := p.value(nil)
		if err != nil {
			return nil, err
		}
		members = append(members, member{key, val})
	}
	p.pos++ // }
	// A stable sort keeps duplicates in input order, so the last of each run is the one kept.
	slices.SortStableFunc(members, func(a, b member) int {
		if len(a.key) != len(b.key) {
			return len(a.key) - len(b.key)
		}
		return strings.Compare(a.key, b.key)
	})
	out = append(out, '{')
	written := 0
	for i, m := range members {
		if i+1 < len(members) && members[i+1].key == m.key {
			continue
		}
		if written > 0 {
			out = append(out, ", "...)
		}
		out = appendString(out, m.key)
		out = append(out, ": "...)
		out = append(out, m.val...)
		written++
	}
	return append(out, '}'), nil
}

func (p *jsonbParser) array(out []byte) ([]byte, error) {
	p.pos++ // [
	out = append(out, '[')
	for n := 0; p.peek() != ']'; n++ {
		if n > 0 {
			if p.peek() != ',' {
				return nil, p.syntax()
			}
			p.pos++
			out = append(out, ", "...)
		}
		var err error
		if out, err = p.value(out); err != nil {
			return nil, err
		}
	}
	p.pos++ // ]
	return append(out, ']'), nil
}

// string reads a string literal and returns its text.
func (p *jsonbParser) string() (string, error) {
	p.pos++ // "
	var b []byte
	for p.pos < len(p.in) {
		c := p.in[p.pos]
		p.pos++
		switch {
		case c == '"':
			return string(b), nil
		case c < 0x20:
			return "", p.syntax()
		case c != '\\':
			b = append(b, c)
		case p.pos >= len(p.in):
			return "", p.syntax()
		default:
			e := p.in[p.pos]
			p.pos++
			if i := strings.IndexByte(`"\/bfnrt`, e); i >= 0 {
				b = append(b, "\"\\/\b\f\n\r\t"[i])
				continue
			}
			if e != 'u' {
				return "", p.syntax()
			}
			r, err := p.unicodeEscape()
			if err != nil {
				return "", err
			}
			b = utf8.AppendRune(b, r)
		}
	}
	return "", p.syntax()
}

// unicodeEscape reads the digits of a \u escape, and the low half of a surrogate pair.
func (p *jsonbParser) unicodeEscape() (rune, error) {
	r, ok := p.hex4()
	switch {
	case !ok:
		return 0, p.syntax()
	case r == 0:
		return 0, refused("unsupported Unicode escape sequence: \\u0000 cannot be converted to text")
	case utf16.IsSurrogate(r) && r < 0xdc00:
		if bytes.HasPrefix(p.in[p.pos:], []byte(`\u`)) {
			p.pos += 2
			if low, ok := p.hex4(); ok && low >= 0xdc00 && low <= 0xdfff {
				return utf16.DecodeRune(r, low), nil
			}
		}
		return 0, refused("invalid input syntax for type json: Unicode low surrogate must follow a high surrogate")
	case utf16.IsSurrogate(r):
		return 0, refused("invalid input syntax for type json: Unicode low surrogate must follow a high surrogate")
	}
	return r, nil
}

func (p *jsonbParser) hex4() (rune, bool) {
	if p.pos+4 > len(p.in) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(p.in[p.pos:p.pos+4]), 16, 16)
	if err != nil {
		return 0, false
	}
	p.pos += 4
	return rune(n), true
}

// appendString appends s as a JSON string escaped the way PostgreSQL prints it: only the quote,
// the backslash and control characters.
func appendString(out []byte, s string) []byte {
	out = append(out, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			out = append(out, '\\', c)
		case '\b':
			out = append(out, `\b`...)
		case '\f':
			out = append(out, `\f`...)
		case '\n':
			out = append(out, `\n`...)
		case '\r':
			out = append(out, `\r`...)
		case '\t':
			out = append(out, `\t`...)
		default:
			if c < 0x20 {
				out = append(out, `\u00`...)
				out = append(out, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
				continue
			}
			out = append(out, c)
		}
	}
	return append(out, '"')
}

// number appends the number at the reader's position as numeric prints it.
func (p *jsonbParser) number(out []byte) ([]byte, error) {
	start := p.pos
	for p.pos < len(p.in) && strings.IndexByte("+-.0123456789eE", p.in[p.pos]) >= 0 {
		p.pos++
	}
	n, err := numeric(string(p.in[start:p.pos]))
	if err != nil {
		return nil, err
	}
	return append(out, n...), nil
}

// numeric returns the JSON number lit as PostgreSQL's numeric prints it: the exact value with as
// many decimals as lit has after its point, less its exponent (1.50e1 is 15.0, 1e-2 is 0.01),
// without a negative zero. It refuses what is not a JSON number and what numeric cannot hold.
func numeric(lit string) (string, error) {
	s, neg := strings.CutPrefix(lit, "-")
	mantissa, exponent, hasExp := strings.Cut(strings.ReplaceAll(s, "E", "e"), "e")
	intPart, frac, hasPoint := strings.Cut(mantissa, ".")
	if !isDigits(intPart) || (len(intPart) > 1 && intPart[0] == '0') || (hasPoint && !isDigits(frac)) {
		return "", refused("invalid input syntax for type json: number %q", lit)
	}
	exp := 0
	if hasExp {
		unsigned, _ := strings.CutPrefix(exponent, "+")
		if unsigned == exponent {
			unsigned, _ = strings.CutPrefix(exponent, "-")
		}
		if !isDigits(unsigned) {
			return "", refused("invalid input syntax for type json: number %q", lit)
		}
		e, err := strconv.Atoi(exponent)
		if err != nil || e >= 1<<30 || e <= -(1<<30) {
			return "", refused("value overflows numeric format: %q", lit)
		}
		exp = e
	}
	// The value is digits × 10^-scale.
	digits := strings.TrimLeft(intPart+frac, "0")
	scale := len(frac) - exp
	dscale := max(scale, 0)
	if dscale > numericMaxScale || (digits != "" && len(digits)-scale > numericMaxIntDigits) {
		return "", refused("value overflows numeric format: %q", lit)
	}
	if digits == "" {
		neg = false // numeric has no negative zero
	} else if scale < 0 {
		digits += strings.Repeat("0", -scale)
	}
	if len(digits) <= dscale {
		digits = strings.Repeat("0", dscale-len(digits)+1) + digits
	}
	out := digits[:len(digits)-dscale]
	if dscale > 0 {
		out += "." + digits[len(digits)-dscale:]
	}
	if neg {
		out = "-" + out
	}
	return out, nil
}

// isDigits reports whether s is one or more ASCII digits.
func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/sagacoord/sagacoord/protocol"
)

// Bounds of a list page (ListSagas, ListTransactions, ListDefinitions): docs/api.md.
const (
	// DefaultPageSize is the page size of a request that gives none.
	DefaultPageSize = 50
	// MaxPageSize caps a request's page size.
	MaxPageSize = 1000
	// MaxPageBytes bounds a page's encoded size, well under the 4 MiB a gRPC client accepts by
	// default: a page ends before the item that would take it past this (its first item aside).
	MaxPageBytes = 2 << 20
	// maxTokenBytes bounds a page token as received.
	maxTokenBytes = 512
)

// pageSize applies the default and the cap of a page size.
func pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, invalid("page_size", "is %d; it must be 0 (the default, %d) or positive", n, DefaultPageSize)
	case n == 0:
		return DefaultPageSize, nil
	case n > MaxPageSize:
		return MaxPageSize, nil
	}
	return int(n), nil
}

// page converts rows, which the store returned for a page of size items (one more when there are
// more), into at most size items that fit in MaxPageBytes. next makes the token of the row after
// which the next page starts; the returned token is "" on the last page.
func page[R any, M proto.Message](rows []R, size int, conv func(R) M, next func(R) string) ([]M, string) {
	out := make([]M, 0, min(len(rows), size))
	used := 0
	for i, r := range rows {
		if i == size {
			return out, next(rows[i-1])
		}
		m := conv(r)
		n := proto.Size(m) + 8 // the field's tag and length
		if i > 0 && used+n > MaxPageBytes {
			return out, next(rows[i-1])
		}
		used += n
		out = append(out, m)
	}
	return out, ""
}

// pageToken is where a listing continues, for the listing (Kind) and the filters (Filter, a
// hash) it came from: after the row created at At (Unix nanoseconds) with id ID, or after the
// definition Name. A client sees it as an opaque string, checked when it comes back.
type pageToken struct {
	Kind   string `json:"k"`
	Filter string `json:"f,omitempty"`
	At     int64  `json:"t,omitempty"`
	ID     string `json:"i,omitempty"`
	Name   string `json:"n,omitempty"`
}

// Listings, the Kind of their tokens.
const (
	listSagas        = "sagas"
	listTransactions = "transactions"
	listDefinitions  = "definitions"
)

// filterHash names a listing's filters in its tokens.
func filterHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:9])
}

// tokenSum is the checksum that precedes a token's JSON.
func tokenSum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:4]
}

// encode returns the token as a client sees it: base64url of a checksum and the JSON.
func (t pageToken) encode() string {
	b, _ := json.Marshal(t) // strings and integers: never fails
	return base64.RawURLEncoding.EncodeToString(append(tokenSum(b), b...))
}

// rowToken is the token that continues a listing of sagas or transactions after a row.
func rowToken(kind, filter string, at time.Time, id uuid.UUID) string {
	return pageToken{Kind: kind, Filter: filter, At: at.UnixNano(), ID: id.String()}.encode()
}

var errBadToken = errors.New("not a page token")

// decodeToken checks tok, a token from a response of listing kind with filters filter.
func decodeToken(tok, kind, filter string) (pageToken, error) {
	if len(tok) > maxTokenBytes {
		return pageToken{}, errBadToken
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) < 5 || !bytes.Equal(raw[:4], tokenSum(raw[4:])) {
		return pageToken{}, errBadToken
	}
	var t pageToken
	dec := json.NewDecoder(bytes.NewReader(raw[4:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil || dec.More() || t.Kind != kind || t.Filter != filter {
		return pageToken{}, errBadToken
	}
	if kind == listDefinitions {
		if protocol.CheckName(t.Name) != nil || t.ID != "" || t.At != 0 {
			return pageToken{}, errBadToken
		}
		return t, nil
	}
	if _, err := uuid.Parse(t.ID); err != nil || t.Name != "" {
		return pageToken{}, errBadToken
	}
	return t, nil
}

// tokenError is the error of a page token decodeToken refused.
func tokenError(call string) error {
	return invalid("page_token", "not a token from a previous %s response with the same filters; start again without page_token", call)
}

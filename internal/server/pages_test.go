package server

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

func TestPageTokenRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	id := uuid.New()
	f := filterHash("RUNNING", "order")
	tok := rowToken(listSagas, f, at, id)
	got, err := decodeToken(tok, listSagas, f)
	require.NoError(t, err)
	require.Equal(t, at.UnixNano(), got.At)
	require.Equal(t, id.String(), got.ID)
	_, err = decodeToken(tok, listSagas, filterHash("RUNNING", "other"))
	require.ErrorIs(t, err, errBadToken, "another filter")
	_, err = decodeToken(tok, listTransactions, f)
	require.ErrorIs(t, err, errBadToken, "another listing")

	def := pageToken{Kind: listDefinitions, Name: "order"}.encode()
	got, err = decodeToken(def, listDefinitions, "")
	require.NoError(t, err)
	require.Equal(t, "order", got.Name)
	_, err = decodeToken(pageToken{Kind: listDefinitions, Name: "bad name"}.encode(), listDefinitions, "")
	require.ErrorIs(t, err, errBadToken, "a definitions token holds a name")
	_, err = decodeToken(pageToken{Kind: listSagas, Filter: f, ID: "x"}.encode(), listSagas, f)
	require.ErrorIs(t, err, errBadToken, "a sagas token holds a UUID")
}

// FuzzPageToken: whatever a client sends as a page token, decoding neither panics nor accepts
// a token that does not name a position of the listing it came with; what it accepts encodes
// back to a token that decodes to the same position.
func FuzzPageToken(f *testing.F) {
	sagas := filterHash("", "")
	f.Add(rowToken(listSagas, sagas, time.Unix(0, 42), uuid.MustParse("3f1c2a7e-0000-4000-8000-000000000001")), int64(7), "order")
	f.Add(pageToken{Kind: listDefinitions, Name: "order"}.encode(), int64(-1), "a.b_c-d")
	f.Add("garbage", int64(0), "")
	f.Add("", int64(0), "x y")
	f.Fuzz(func(t *testing.T, tok string, at int64, name string) {
		for _, kind := range []string{listSagas, listTransactions, listDefinitions} {
			filter := sagas
			if kind == listDefinitions {
				filter = ""
			}
			got, err := decodeToken(tok, kind, filter)
			if err != nil {
				continue
			}
			again, err := decodeToken(got.encode(), kind, filter)
			if err != nil || again != got {
				t.Fatalf("token %q decodes to %+v, which encodes to a token that decodes to %+v, %v", tok, got, again, err)
			}
		}
		id := uuid.NewSHA1(uuid.Nil, []byte(name))
		got, err := decodeToken(rowToken(listTransactions, sagas, time.Unix(0, at), id), listTransactions, sagas)
		if err != nil || got.At != at || got.ID != id.String() {
			t.Fatalf("position (%d, %s) does not survive its token: %+v, %v", at, id, got, err)
		}
		_, err = decodeToken(pageToken{Kind: listDefinitions, Name: name}.encode(), listDefinitions, "")
		if valid := err == nil; valid != (checkName("name", name) == nil) {
			t.Fatalf("definition token of name %q: decoded %v, though the name rule says %v", name, valid, checkName("name", name))
		}
	})
}

package memstore

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
)

// The expected texts are what PostgreSQL 15 prints for each document cast to jsonb.
func TestJSONBPrintsAsPostgreSQL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{`{"bb":1,"a":2,"a":3}`, `{"a": 3, "bb": 1}`},
		{`{"aa":1,"b":2,"aa":{"x":1},"c":3}`, `{"b": 2, "c": 3, "aa": {"x": 1}}`},
		{`{"b":{"d":1,"c":2},"a":[{"z":1,"y":2}],"":0," ":1,"é":2,"e":3}`, `{"": 0, " ": 1, "a": [{"y": 2, "z": 1}], "b": {"c": 2, "d": 1}, "e": 3, "é": 2}`},
		{`{"x":{},"y":[],"z":null,"w":true,"v":false}`, `{"v": false, "w": true, "x": {}, "y": [], "z": null}`},
		{"  [ 1 , { \"k\" : \"v\" } ]  ", `[1, {"k": "v"}]`},
		{`[1.50,1e2,1.5e1,1.50e1,-0,-0.0,0e5,1E-2,100e-2,1.0e2,12345678901234567890123,-1.5e-3,1e+5,1e-0,-0e-2,0e200000,0.000e200000,0e-3]`,
			`[1.50, 100, 15, 15.0, 0, 0.0, 0, 0.01, 1.00, 100, 12345678901234567890123, -0.0015, 100000, 1, 0.00, 0, 0, 0.000]`},
		{`-0.0e-5`, `0.000000`},
		{`3.0e-1`, `0.30`},
		{`"a\"b\\c\/d\b\f\n\r\t\u0001\u001f\u007f\u2028 é \ud83d\ude00 </>"`, "\"a\\\"b\\\\c/d\\b\\f\\n\\r\\t\\u0001\\u001f\u007f\u2028 é 😀 </>\""},
		{`"\u00e9\u0041"`, `"éA"`},
		{`"\\u0000"`, `"\\u0000"`},
		{`null`, `null`},
	} {
		got, err := jsonb([]byte(tc.in))
		require.NoError(t, err, "%s", tc.in)
		require.Equal(t, tc.want, string(got), "%s", tc.in)
	}
}

// The documents are those PostgreSQL 15 refuses to cast to jsonb.
func TestJSONBRefusesWhatPostgreSQLRefuses(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`"\u0000"`, `{"a":"\ud83d"}`, `"\ude00"`, `"\ud83d\u0041"`, // escapes text cannot hold
		`1e-16384`, `0e-16384`, `1e131072`, `1e2147483647`, // beyond numeric
		`[1,]`, `{"a":1,}`, `01`, `+1`, `1.`, `.5`, `1e`, `tru`, `"abc`, `[1 2]`, // not JSON
		"\"a\x00b\"", "\"\xff\"", // not text
	} {
		_, err := jsonb([]byte(in))
		require.Error(t, err, "%q", in)
		require.True(t, errors.Is(err, store.ErrInvalidData), "%q: %v", in, err)
	}
}

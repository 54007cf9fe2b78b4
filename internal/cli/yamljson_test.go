package cli

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A YAML file reads as it did when sigs.k8s.io/yaml converted it to JSON: a scalar bound for a
// string is its text, unquoted YAML 1.1 booleans are booleans, numbers stay numbers.
func TestYAMLScalarsReadAsBefore(t *testing.T) {
	t.Parallel()
	def, err := ParseDefinition("d.yaml", []byte("name: 2024\nsteps:\n  - {name: on, participant: p, action: x, pivot: yes}\n  - {name: b, participant: p, action: y, pivot: off}\n"))
	require.NoError(t, err)
	require.Equal(t, "2024", def.GetName(), "a number bound for a string field is its text")
	require.Equal(t, "on", def.GetSteps()[0].GetName(), "a boolean word bound for a string field is its text")
	require.True(t, def.GetSteps()[0].GetPivot(), "pivot: yes")
	require.False(t, def.GetSteps()[1].GetPivot(), "pivot: off")

	req, err := ParseTransaction("t.yaml", []byte(`participants:
  - name: a
    payload: {flag: yes, quoted: "yes", off: No, n: 5, f: 1.5, big: 12345678901234, nothing: ~, list: [1, two], "3": x}
`))
	require.NoError(t, err)
	require.JSONEq(t, `{"flag":true,"quoted":"yes","off":false,"n":5,"f":1.5,"big":12345678901234,"nothing":null,"list":[1,"two"],"3":"x"}`,
		string(req.GetParticipants()[0].GetPayload()))
}

func TestYAMLConversionErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, data, want string
	}{
		{"key twice in a payload", "participants:\n  - name: a\n    payload:\n      x: 1\n      x: 2\n", "t.yaml:5: participants[0].payload.x: key given twice (first on line 4)"},
		{"merged key set again in a payload", "participants:\n  - name: a\n    payload: {<<: &m {x: 1}, x: 2}\n", "t.yaml:3: participants[0].payload.x: key given twice (first on line 3)"},
		{"merge of a scalar", "participants:\n  - name: a\n    payload: {<<: 5}\n", "t.yaml:3: participants[0].payload: a merge (<<) takes a mapping or a list of mappings"},
		{"infinity", "participants:\n  - name: a\n    payload: {x: .inf}\n", "t.yaml:3: participants[0].payload.x: .inf is not a number JSON can hold"},
		{"mapping as a key", "participants:\n  - name: a\n    payload: {? {a: 1} : 2}\n", "a key must be a string"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTransaction("t.yaml", []byte(tt.data))
			var fe *FileError
			require.ErrorAs(t, err, &fe)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

// Aliases can make a small file a huge document; the conversion stops with an error that names
// the file instead of building it.
func TestYAMLAliasBomb(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("participants:\n  - name: a\n    payload:\n      l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 8; i++ {
		b.WriteString("      l" + string(rune('0'+i)) + ": &l" + string(rune('0'+i)) + " [" + strings.Repeat("*l"+string(rune('0'+i-1))+", ", 9) + "*l" + string(rune('0'+i-1)) + "]\n")
	}
	_, err := ParseTransaction("t.yaml", []byte(b.String()))
	var fe *FileError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "t.yaml", fe.File)
	require.Contains(t, fe.Msg, "once its aliases are expanded")
}

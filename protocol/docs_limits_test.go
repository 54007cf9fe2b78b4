package protocol_test

import (
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/sagacoord/sagacoord/protocol"
)

// limitMention is a size written next to the constant it names, as "16 MiB (`protocol.MaxBodyBytes`)"
// or "1 to 64 objects (`protocol.MaxBundleItems`)".
var limitMention = regexp.MustCompile("(\\d+)\\s*(MiB|KiB)?[^(`\\n0-9]{0,40}\\(`protocol\\.(Max\\w+)`")

// TestDocumentedLimitsAreTheCode: every limit the protocol documents next to a protocol constant
// is that constant's value, so that a worker in another language reads the limits the code
// enforces.
func TestDocumentedLimitsAreTheCode(t *testing.T) {
	t.Parallel()
	constants := map[string]int{
		"MaxBodyBytes":   protocol.MaxBodyBytes,
		"MaxOutputBytes": protocol.MaxOutputBytes,
		"MaxErrorBytes":  protocol.MaxErrorBytes,
		"MaxJSONDepth":   protocol.MaxJSONDepth,
		"MaxBundleItems": protocol.MaxBundleItems,
		"MaxBundleBytes": protocol.MaxBundleBytes,
	}
	seen := map[string]int{}
	for _, path := range []string{"../docs/protocol.md", "../docs/twopc.md"} {
		text, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range limitMention.FindAllStringSubmatch(string(text), -1) {
			want, known := constants[m[3]]
			if !known {
				t.Errorf("%s: %q names protocol.%s, which this test does not know: add it", path, m[0], m[3])
				continue
			}
			n, _ := strconv.Atoi(m[1])
			switch m[2] {
			case "MiB":
				n <<= 20
			case "KiB":
				n <<= 10
			}
			if n != want {
				t.Errorf("%s: %q says %d, but protocol.%s is %d", path, m[0], n, m[3], want)
			}
			seen[m[3]]++
		}
	}
	for name := range constants {
		if seen[name] == 0 {
			t.Errorf("no document states protocol.%s next to its value", name)
		}
	}
}

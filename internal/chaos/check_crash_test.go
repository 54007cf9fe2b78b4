package chaos

import (
	"slices"
	"testing"
)

func TestCrashPointTxs(t *testing.T) {
	log := []byte(`{"time":"2026-11-26T11:09:37Z","level":"INFO","msg":"coordinator started"}
{"time":"2026-11-26T11:09:37Z","level":"WARN","msg":"` + crashPointMessage + `","tx_id":"d57b0270-2bb4-4b77-af10-8e72e266b8bb"}
not JSON, but naming the ` + crashPointMessage + `
{"time":"2026-11-26T11:10:01Z","level":"WARN","msg":"` + crashPointMessage + `","tx_id":"14cbdc32-6712-427c-8576-ac5b10117b9f"}
`)
	got := crashPointTxs(log)
	want := []string{"d57b0270-2bb4-4b77-af10-8e72e266b8bb", "14cbdc32-6712-427c-8576-ac5b10117b9f"}
	if !slices.Equal(got, want) {
		t.Fatalf("crashPointTxs = %v, want %v", got, want)
	}
}

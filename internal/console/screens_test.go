package console_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/engine"
	"github.com/sagacoord/sagacoord/saga"
)

// viewports are the sizes every view must be readable at: a laptop's and a phone's.
var viewports = []struct {
	name          string
	width, height int
}{{"desktop", 1280, 800}, {"phone", 390, 844}}

// screenshotDir is where the screenshots go: $SAGACOORD_SCREENSHOTS when set, else a directory
// of the test's; the test's log names it.
func screenshotDir(t *testing.T) string {
	dir := os.Getenv("SAGACOORD_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	t.Logf("screenshots in %s", dir)
	return dir
}

// open navigates to path and waits until the page at wantPath (the path after redirects) has
// loaded.
func (b *browser) open(base, path, wantPath string) {
	b.t.Helper()
	b.call("Page.navigate", map[string]any{"url": base + path}, nil)
	b.await("the page "+wantPath, `location.pathname === `+jsString(wantPath)+` && document.readyState === "complete"`, "true")
}

func jsString(s string) string {
	j, _ := json.Marshal(s)
	return string(j)
}

// shoot checks at each viewport that the page does not overflow the window's width, and writes
// a screenshot of it, name-WIDTHxHEIGHT.png, into dir.
func (b *browser) shoot(dir, name string) {
	b.t.Helper()
	for _, vp := range viewports {
		b.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": vp.width, "height": vp.height, "deviceScaleFactor": 1, "mobile": false}, nil)
		b.await(name+" at "+vp.name+" width", `window.innerWidth`, fmt.Sprint(vp.width))
		sw := b.eval(`document.documentElement.scrollWidth`)
		require.Equal(b.t, "true", b.eval(`document.documentElement.scrollWidth <= window.innerWidth`),
			"%s overflows at %dx%d: the page is %s px wide", name, vp.width, vp.height, sw)
		var shot struct{ Data string }
		b.call("Page.captureScreenshot", map[string]any{"format": "png"}, &shot)
		png, err := base64.StdEncoding.DecodeString(shot.Data)
		require.NoError(b.t, err)
		file := filepath.Join(dir, fmt.Sprintf("%s-%dx%d.png", name, vp.width, vp.height))
		require.NoError(b.t, os.WriteFile(file, png, 0o644))
	}
	b.call("Emulation.clearDeviceMetricsOverride", map[string]any{}, nil)
}

// compensatedSaga registers "booking" (hold, charge, debit; no pivot) and starts one whose
// debit fails while e.broken is set, so that charge and then hold are compensated; it waits
// until the saga is COMPENSATED.
func (e *env) compensatedSaga() uuid.UUID {
	once := saga.RetryPolicy{MaxAttempts: 1, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Multiplier: 1}
	_, _, err := e.coord.Engine().RegisterDefinition(e.ctx, saga.Definition{Name: "booking", Steps: []saga.StepDefinition{
		{Name: "hold", Participant: "bank", Action: "hold", Compensation: "release"},
		{Name: "charge", Participant: "bank", Action: "charge", Compensation: "refund", DependsOn: []string{"hold"}},
		{Name: "debit", Participant: "bank", Action: "debit", DependsOn: []string{"charge"}, Retry: once},
	}})
	require.NoError(e.t, err)
	sg, _, err := e.coord.Engine().StartSaga(e.ctx, engine.StartRequest{Definition: "booking", Input: json.RawMessage(`{"room":12}`)})
	require.NoError(e.t, err)
	e.waitStatus(sg.ID, saga.StatusCompensated)
	return sg.ID
}

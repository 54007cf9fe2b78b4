package console_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// unnamedControls lists, by their HTML, the page's controls (input, select, button, textarea;
// hidden inputs aside) that have no accessible name: no label, aria-label, aria-labelledby,
// title, or text of their own.
const unnamedControls = `[...document.querySelectorAll("input, select, button, textarea")].filter(el => {
	if (el.type === "hidden") return false;
	const text = s => (s || "").trim() !== "";
	if (text(el.getAttribute("aria-label")) || text(el.title)) return false;
	const by = el.getAttribute("aria-labelledby");
	if (by && by.split(/\s+/).some(id => document.getElementById(id) && text(document.getElementById(id).textContent))) return false;
	if (el.labels && [...el.labels].some(l => text(l.textContent))) return false;
	if ((el.tagName === "BUTTON") && text(el.textContent)) return false;
	if (["submit", "button", "reset"].includes(el.type) && text(el.value)) return false;
	return true;
}).map(el => el.outerHTML)`

// reachable is what a keyboard must reach: the navigation's links and every control of every
// form (hidden inputs aside), by a description of each.
const reachable = `[...document.querySelectorAll("nav a, form input, form select, form button, form textarea")]
	.filter(el => el.type !== "hidden" && !el.closest("[hidden]"))`

// checkAccessible fails unless the page has its landmarks, names every control, and reaches
// every navigation link and form control with Tab, each with a visible focus ring.
func (b *browser) checkAccessible(page string) {
	b.t.Helper()
	require.Equal(b.t, `[1,1,1]`, b.eval(`["header", "nav", "main"].map(s => document.querySelectorAll(s).length)`), "%s: the landmarks", page)
	require.Equal(b.t, "[]", b.eval(unnamedControls), "%s: controls without an accessible name", page)
	var ax struct {
		Nodes []struct {
			Ignored bool
			Role    struct{ Value string }
			Name    *struct{ Value string }
		}
	}
	b.call("Accessibility.getFullAXTree", map[string]any{}, &ax)
	for _, n := range ax.Nodes {
		switch n.Role.Value {
		case "button", "textbox", "combobox", "checkbox", "link", "searchbox", "spinbutton":
			if !n.Ignored {
				require.True(b.t, n.Name != nil && n.Name.Value != "", "%s: Chromium computes no name for a %s", page, n.Role.Value)
			}
		}
	}
	want := b.eval(reachable + `.length`)
	b.eval(`window.tabbed = new Set(); document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); true`)
	var count int
	// A date and time input takes a Tab per field (month, day, year, hours, minutes, AM/PM).
	require.NoError(b.t, json.Unmarshal([]byte(b.eval(`document.querySelectorAll("a[href], input, select, button, textarea").length +
		8 * document.querySelectorAll("input[type=datetime-local]").length`)), &count))
	for range count + 3 {
		b.call("Input.dispatchKeyEvent", map[string]any{"type": "keyDown", "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9}, nil)
		b.call("Input.dispatchKeyEvent", map[string]any{"type": "keyUp", "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9}, nil)
		focusVisible := b.eval(`(() => { const el = document.activeElement; if (!el || el === document.body) return true;
			window.tabbed.add(el); const s = getComputedStyle(el); return s.outlineStyle !== "none" && parseFloat(s.outlineWidth) >= 2; })()`)
		require.Equal(b.t, "true", focusVisible, "%s: no visible focus on %s", page, b.eval(`document.activeElement.outerHTML.slice(0, 200)`))
	}
	require.Equal(b.t, "[]", b.eval(reachable+`.filter(el => !window.tabbed.has(el)).map(el => el.outerHTML.slice(0, 120))`),
		"%s: Tab does not reach these (of %s)", page, want)
}

// Every view has a header, a navigation and a main landmark, names every control, and is usable
// with the keyboard alone: Tab reaches every navigation link and form control, and the focused
// one shows a focus ring.
func TestAccessibilityInChromium(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	failed := e.failedSaga()
	b := startBrowser(t, e.ctx)

	b.open(e.base, "/sagas", "/login")
	b.checkAccessible("login")
	b.loginAs(operatorToken, "/sagas")
	for _, path := range []string{"/sagas", "/sagas/" + failed.String(), "/attention", "/transactions", "/definitions",
		"/definitions/transfer", "/participants", "/participants/bank"} {
		b.open(e.base, path, path)
		b.checkAccessible(path)
	}
}

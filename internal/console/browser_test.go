package console_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/saga"
)

// browser is headless Chromium driven over the DevTools protocol on a pipe
// (--remote-debugging-pipe: commands on fd 3, answers on fd 4, each JSON ending in a NUL byte),
// which needs no WebSocket library.
type browser struct {
	t       *testing.T
	out     *os.File
	mu      sync.Mutex
	next    int
	waiting map[int]chan cdpReply
	session string
}

type cdpReply struct {
	ID     int             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// startBrowser starts Chromium with one page, or skips the test when it is not installed.
func startBrowser(t *testing.T, ctx context.Context) *browser {
	chromium := ""
	for _, c := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(c); err == nil {
			chromium = c
		}
	}
	if chromium == "" {
		t.Skip("chromium is not installed (apt-get install -y chromium): cannot drive the console in a browser")
	}
	toChrome, cmdIn, err := os.Pipe()
	require.NoError(t, err)
	cmdOut, fromChrome, err := os.Pipe()
	require.NoError(t, err)
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--ignore-certificate-errors",
		"--remote-debugging-pipe", "--user-data-dir="+t.TempDir(), "about:blank")
	cmd.ExtraFiles = []*os.File{toChrome, fromChrome}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	_ = toChrome.Close()
	_ = fromChrome.Close()
	t.Cleanup(func() {
		_ = cmdIn.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("chromium stderr:\n%.3000s", stderr.String())
		}
	})
	b := &browser{t: t, out: cmdIn, waiting: map[int]chan cdpReply{}}
	go b.read(cmdOut)
	var target struct{ TargetID string }
	b.call("Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var attached struct{ SessionID string }
	b.call("Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	b.session = attached.SessionID
	return b
}

// read hands each answer to its caller; events are dropped.
func (b *browser) read(in *os.File) {
	r := bufio.NewReader(in)
	for {
		msg, err := r.ReadBytes(0)
		if err != nil {
			return
		}
		var rep cdpReply
		if json.Unmarshal(msg[:len(msg)-1], &rep) != nil || rep.ID == 0 {
			continue
		}
		b.mu.Lock()
		ch := b.waiting[rep.ID]
		delete(b.waiting, rep.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
}

// call sends a command (to the page once attached) and decodes its result into out.
func (b *browser) call(method string, params any, out any) {
	b.t.Helper()
	b.mu.Lock()
	b.next++
	id, ch := b.next, make(chan cdpReply, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if b.session != "" {
		msg["sessionId"] = b.session
	}
	data, err := json.Marshal(msg)
	require.NoError(b.t, err)
	_, err = b.out.Write(append(data, 0))
	require.NoError(b.t, err)
	select {
	case rep := <-ch:
		if rep.Error != nil {
			b.t.Fatalf("%s: %s", method, rep.Error.Message)
		}
		if out != nil {
			require.NoError(b.t, json.Unmarshal(rep.Result, out))
		}
	case <-time.After(30 * time.Second):
		b.t.Fatalf("%s: no answer from chromium in 30s", method)
	}
}

// eval runs a JavaScript expression in the page and returns its value as JSON text.
func (b *browser) eval(expr string) string {
	b.t.Helper()
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &res)
	if res.ExceptionDetails != nil {
		b.t.Fatalf("%s: %s", expr, res.ExceptionDetails.Text)
	}
	return string(res.Result.Value)
}

// await polls expr until it returns want, with a deadline.
func (b *browser) await(what, expr, want string) {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	got := ""
	for time.Now().Before(deadline) {
		if got = b.eval(expr); got == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.t.Fatalf("%s: %s is %s after 30s, want %s; page:\n%.3000s", what, expr, got, want, b.eval("document.documentElement.outerHTML"))
}

// In a real browser an operator logs in, opens a FAILED saga, retries it with a reason, and
// sees the saga's new status arrive on the same page, without a reload.
func TestOperatorRetriesInChromium(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.failedSaga()
	b := startBrowser(t, e.ctx)

	b.call("Page.navigate", map[string]any{"url": e.base + "/login?next=/sagas/" + id.String()}, nil)
	b.await("the login page", `document.getElementById("token") !== null`, "true")
	b.eval(fmt.Sprintf(`document.getElementById("token").value = %q; document.getElementById("login").click(); true`, operatorToken))
	b.await("the saga page after login", `location.pathname`, fmt.Sprintf("%q", "/sagas/"+id.String()))
	b.await("the saga's status", `document.readyState === "complete" && document.getElementById("saga-status").textContent`, `"FAILED"`)

	b.eval(`window.notReloaded = true`)
	e.broken.Store(false)
	b.eval(`document.getElementById("retry-reason").value = "ledger is back"; document.getElementById("retry-confirm").checked = true; document.getElementById("retry").click(); true`)
	b.await("the new status, by the event stream", `document.getElementById("saga-status").textContent`, `"COMPLETED"`)
	require.Equal(t, "true", b.eval(`window.notReloaded === true`), "the page was reloaded")
	require.Equal(t, `"SUCCEEDED"`, b.eval(`document.querySelector('tr[data-step="1"] [data-field="status"]').textContent`))

	sg, err := e.coord.Engine().GetSaga(e.ctx, id)
	require.NoError(t, err)
	require.Equal(t, saga.StatusCompleted, sg.State.Status)
	require.Len(t, sg.State.Audit, 1)
	require.Equal(t, saga.AuditEntry{Action: saga.AuditRetry, By: "otto", At: sg.State.Audit[0].At, Reason: "ledger is back"}, sg.State.Audit[0])
}

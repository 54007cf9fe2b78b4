package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// process is one child process of a scenario (a coordinator or a participant-sim), started again
// with the same arguments after a restart.
type process struct {
	name, role string
	bin        string
	// args returns the arguments of a start; first is true for the very first one.
	args    func(first bool) []string
	logPath string
	// ready reports whether a start is serving; logFrom is the log offset where it began.
	ready         func(ctx context.Context, p *process, logFrom int64) error
	restartOnExit time.Duration
	// metricsAddr is the instance's metrics listener, for the recovery check; empty: none.
	metricsAddr string
	event       func(format string, args ...any)
	// crashed is told when an instance exits on its own, and restarted when the instance
	// started after that is ready: the start and the heal of a crash fault, for the convergence
	// measure. Either may be nil.
	crashed, restarted func(p *process)

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	starts   int
	expected bool // the current instance is being stopped or killed on purpose
	stopped  bool // the run is over: never restart
	paused   bool // SIGSTOPped
	logFrom  int64
}

// start starts a new instance; it does not wait until it is ready.
func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return errors.New("the run is over")
	}
	if p.cmd != nil {
		select {
		case <-p.exited:
		default:
			return fmt.Errorf("%s is still running", p.name)
		}
	}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	st, _ := f.Stat()
	p.logFrom = st.Size()
	fmt.Fprintf(f, "\n===== chaos: start %d of %s at %s =====\n", p.starts+1, p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args(p.starts == 0)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.starts++
	p.cmd, p.expected, p.paused = cmd, false, false
	exited := make(chan struct{})
	p.exited = exited
	go p.wait(cmd, f, exited)
	return nil
}

func (p *process) wait(cmd *exec.Cmd, f *os.File, exited chan struct{}) {
	err := cmd.Wait()
	f.Close()
	close(exited)
	p.mu.Lock()
	expected, stopped, delay := p.expected, p.stopped, p.restartOnExit
	p.mu.Unlock()
	if expected || stopped {
		return
	}
	p.event("%s exited on its own (%v)", p.name, err)
	if p.crashed != nil {
		p.crashed(p)
	}
	if delay <= 0 {
		return
	}
	time.Sleep(delay)
	if err := p.start(); err != nil {
		p.event("restart of %s after it exited failed: %v", p.name, err)
		return
	}
	p.event("%s restarted after it exited", p.name)
	if p.restarted != nil {
		p.restarted(p)
	}
}

// waitReady waits until the current instance is ready.
func (p *process) waitReady(ctx context.Context) error {
	p.mu.Lock()
	from, exited := p.logFrom, p.exited
	p.mu.Unlock()
	for {
		err := p.ready(ctx, p, from)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited before it was ready; see %s", p.name, p.logPath)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %v; see %s", p.name, err, p.logPath)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// logContains reports whether the log, from offset on, contains s.
func (p *process) logContains(from int64, s string) bool {
	f, err := os.Open(p.logPath)
	if err != nil {
		return false
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return false
	}
	b, _ := io.ReadAll(io.LimitReader(f, 64<<20))
	return bytes.Contains(b, []byte(s))
}

func (p *process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.signalLocked(sig)
}

// signalLocked is signal with p.mu held.
func (p *process) signalLocked(sig syscall.Signal) error {
	if p.cmd == nil || p.cmd.Process == nil {
		return fmt.Errorf("%s is not running", p.name)
	}
	select {
	case <-p.exited:
		return fmt.Errorf("%s is not running", p.name)
	default:
	}
	switch sig {
	case syscall.SIGSTOP:
		p.paused = true
	case syscall.SIGCONT:
		p.paused = false
	case syscall.SIGKILL, syscall.SIGTERM:
		p.expected = true
	}
	return p.cmd.Process.Signal(sig)
}

// stop SIGSTOPs the running instance and returns its number (starts) for cont.
func (p *process) stop() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.faultableLocked(syscall.SIGSTOP); err != nil {
		return 0, err
	}
	return p.starts, nil
}

// faultableLocked sends a fault's signal to the running instance, with p.mu held. An instance
// that is being stopped on purpose (a restart or kill under way) is refused: freezing or
// killing it would not hit the service, which is about to be replaced, and the fault's heal
// would collide with the restart.
func (p *process) faultableLocked(sig syscall.Signal) error {
	if p.expected && p.cmd != nil {
		select {
		case <-p.exited: // down: signalLocked says so
		default:
			return fmt.Errorf("%s is being stopped (a restart or kill is under way)", p.name)
		}
	}
	return p.signalLocked(sig)
}

// cont SIGCONTs the instance stop froze. If that instance is gone (killed while frozen, and
// maybe started again), there is nothing to continue: the freeze did happen, and a new
// instance may be frozen by another fault, which this one must not undo.
func (p *process) cont(instance int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	gone := p.starts != instance
	select {
	case <-p.exited:
		gone = true
	default:
	}
	if gone {
		p.event("%s was killed while frozen: no SIGCONT to send", p.name)
		return nil
	}
	return p.signalLocked(syscall.SIGCONT)
}

// kill SIGKILLs the running instance, unless it is being stopped already, and waits for it to
// be gone.
func (p *process) kill() error {
	p.mu.Lock()
	err := p.faultableLocked(syscall.SIGKILL)
	exited := p.exited
	p.mu.Unlock()
	if err != nil {
		return err
	}
	<-exited
	return nil
}

// terminate stops the instance gracefully (SIGTERM), then with SIGKILL after grace.
func (p *process) terminate(grace time.Duration) {
	p.mu.Lock()
	cmd, exited, paused := p.cmd, p.exited, p.paused
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	if paused {
		_ = p.signal(syscall.SIGCONT)
	}
	_ = p.signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		_ = p.signal(syscall.SIGKILL)
		<-exited
	}
}

// shutdown ends the process for good at the end of the run.
func (p *process) shutdown(grace time.Duration) {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.terminate(grace)
}

func (p *process) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// instance returns the number of the current instance (its start), whether it is running, and
// whether it is frozen.
func (p *process) instance() (n int, running, paused bool) {
	p.mu.Lock()
	n, paused = p.starts, p.paused
	p.mu.Unlock()
	return n, p.running(), paused
}

// currentLogFrom is the log offset where the current instance began.
func (p *process) currentLogFrom() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logFrom
}

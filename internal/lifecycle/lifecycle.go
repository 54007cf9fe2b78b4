// Package lifecycle owns the goroutines of a service: they run under one context, and Stop
// cancels it and waits for all of them (river's startstop, in a few lines). Connect waits for
// the database and broker a service starts before.
package lifecycle

import (
	"context"
	"errors"
	"sync"
)

// Errors of Start.
var (
	ErrStarted = errors.New("already started")
	ErrStopped = errors.New("started after Stop; make a new one")
)

// Group is a set of goroutines started together and stopped together. The zero value is ready.
type Group struct {
	mu      sync.Mutex
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stopped bool
}

// Start returns the context the group's goroutines run under, derived from parent. It fails on a
// second call and after Stop.
func (g *Group) Start(parent context.Context) (context.Context, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.stopped:
		return nil, ErrStopped
	case g.cancel != nil:
		return nil, ErrStarted
	}
	ctx, cancel := context.WithCancel(parent)
	g.cancel = cancel
	return ctx, nil
}

// Go runs f in a goroutine of the group; call it after Start.
func (g *Group) Go(f func()) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f()
	}()
}

// Stop cancels the group's context and waits for its goroutines. It is idempotent and safe to
// call without Start; it reports whether this call stopped a running group.
func (g *Group) Stop() bool {
	g.mu.Lock()
	if g.stopped || g.cancel == nil {
		g.stopped = true
		g.mu.Unlock()
		return false
	}
	g.stopped = true
	g.cancel()
	g.mu.Unlock()
	g.wg.Wait()
	return true
}

package server

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// row is a stand-in for a saga or a transaction.
type row struct {
	version  int64
	terminal bool
}

// fake plays the engine's side of a watch and the database.
type fake struct {
	mu      sync.Mutex
	changed chan struct{}
	latest  row
	here    bool // latest is the row as this instance committed it
	stored  row  // what a read returns
	reads   int
}

func newFake(stored row) *fake { return &fake{changed: make(chan struct{}, 1), stored: stored} }

func (f *fake) Changed() <-chan struct{} { return f.changed }

func (f *fake) Latest() (row, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.latest, f.here
}

// commitHere is a change this instance committed: the watch hears of it with the row.
func (f *fake) commitHere(r row) {
	f.mu.Lock()
	f.latest, f.stored, f.here = r, r, true
	f.mu.Unlock()
	f.changed <- struct{}{}
}

// commitElsewhereAndTell is a change another instance committed, which the store told of: the
// watch reads the row at once.
func (f *fake) commitElsewhereAndTell(r row) {
	f.mu.Lock()
	f.stored, f.here = r, false
	f.mu.Unlock()
	f.changed <- struct{}{}
}

// commitElsewhere is a change another instance committed: only a read finds it.
func (f *fake) commitElsewhere(r row) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stored = r
}

func (f *fake) read(context.Context) (row, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.stored, nil
}

func (f *fake) readCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

func run(ctx context.Context, poll time.Duration, f *fake, sent chan<- row) chan error {
	done := make(chan error, 1)
	go func() {
		done <- watch(ctx, poll, f, f.read, func(r row) (int64, bool) { return r.version, r.terminal },
			func(_ context.Context, r row) error { sent <- r; return nil })
	}()
	return done
}

func TestWatchSendsLocalChangesWithoutReading(t *testing.T) {
	t.Parallel()
	f := newFake(row{version: 1})
	sent := make(chan row, 10)
	done := run(context.Background(), time.Hour, f, sent)
	require.Equal(t, row{version: 1}, <-sent, "the row as it is, at once")
	f.commitHere(row{version: 2})
	require.Equal(t, row{version: 2}, <-sent)
	f.commitHere(row{version: 3, terminal: true})
	require.Equal(t, row{version: 3, terminal: true}, <-sent)
	require.NoError(t, <-done, "a terminal row ends the watch")
	require.Equal(t, 1, f.readCount(), "local changes need no read")
}

func TestWatchReadsChangesOfOtherInstances(t *testing.T) {
	t.Parallel()
	f := newFake(row{version: 1})
	sent := make(chan row, 10)
	done := run(context.Background(), time.Millisecond, f, sent)
	require.Equal(t, row{version: 1}, <-sent)
	f.commitElsewhere(row{version: 4, terminal: true})
	require.Equal(t, row{version: 4, terminal: true}, <-sent, "a read after the poll interval finds it")
	require.NoError(t, <-done)
}

func TestWatchSendsEachVersionOnceAndEndsWithTheContext(t *testing.T) {
	t.Parallel()
	f := newFake(row{version: 5})
	sent := make(chan row, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := run(ctx, time.Millisecond, f, sent)
	require.Equal(t, row{version: 5}, <-sent)
	require.Eventually(t, func() bool { return f.readCount() >= 3 }, 5*time.Second, time.Millisecond)
	cancel()
	err := <-done
	require.Equal(t, codes.Canceled, status.Code(err), "the end of the call is a status: %v", err)
	require.Empty(t, sent, "an unchanged version is not sent again")
}

func TestWatchReturnsReadErrorsAsStatus(t *testing.T) {
	t.Parallel()
	err := watch(context.Background(), time.Hour, newFake(row{}), func(context.Context) (row, error) {
		return row{}, errors.New("database down")
	}, func(r row) (int64, bool) { return r.version, r.terminal }, func(context.Context, row) error { return nil })
	require.Equal(t, codes.Internal, status.Code(err))
}

// While reads find nothing new, a watch reads less and less often: over a window of 200 polls'
// length it reads far fewer than 200 times.
func TestWatchBacksOffWhileNothingChanges(t *testing.T) {
	t.Parallel()
	f := newFake(row{version: 1})
	sent := make(chan row, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := run(ctx, time.Millisecond, f, sent)
	<-sent
	time.Sleep(200 * time.Millisecond) // the window observed, not a synchronisation
	cancel()
	<-done
	require.Less(t, f.readCount(), 40, "reads back off to 20 polls' length")
	require.Greater(t, f.readCount(), 1, "but keep reading")
}

// A read that fails after the first one ends the watch with a status, and never touches the row
// it did not get.
func TestWatchReturnsALaterReadErrorAsStatus(t *testing.T) {
	t.Parallel()
	reads := 0
	var sent []*row
	err := watch(context.Background(), time.Millisecond, silent[*row]{}, func(context.Context) (*row, error) {
		reads++
		if reads > 1 {
			return nil, errors.New("database down")
		}
		return &row{version: 1}, nil
	}, func(r *row) (int64, bool) { return r.version, r.terminal }, func(_ context.Context, r *row) error {
		sent = append(sent, r)
		return nil
	})
	require.Equal(t, codes.Internal, status.Code(err))
	require.Len(t, sent, 1)
}

// silent is a watch that hears of no change here.
type silent[T any] struct{}

func (silent[T]) Changed() <-chan struct{} { return nil }

func (silent[T]) Latest() (T, bool) {
	var zero T
	return zero, false
}

func TestWatchReadsAtOnceWhenTheStoreTellsOfAChangeElsewhere(t *testing.T) {
	t.Parallel()
	f := newFake(row{version: 1})
	sent := make(chan row, 10)
	done := run(context.Background(), time.Hour, f, sent)
	require.Equal(t, row{version: 1}, <-sent)
	f.commitElsewhereAndTell(row{version: 2, terminal: true})
	require.Equal(t, row{version: 2, terminal: true}, <-sent, "read without waiting for the hour's poll")
	require.NoError(t, <-done)
	require.Equal(t, 2, f.readCount())
}

func TestWatchPollIsASafetyNetWhileListening(t *testing.T) {
	t.Parallel()
	require.Equal(t, defaultWatchPoll, watchPoll(0, false))
	require.Equal(t, 20*time.Millisecond, watchPoll(20*time.Millisecond, false))
	require.Equal(t, listeningWatchPoll, watchPoll(0, true))
	require.Equal(t, 3*time.Second, watchPoll(3*time.Second, true))
}

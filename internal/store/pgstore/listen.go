package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Every state transaction notifies, on a channel per table, which rows it changed; Listen hears
// the changes of other instances. The payload is the writer's instance name, '|', and the ids,
// comma-separated; a transaction that changed more rows than notifyChunk sends several.
const (
	channelPrefix = "sagacoord_"
	notifyChunk   = "150" // 150 ids of 37 bytes: well under PostgreSQL's 8000-byte payload
)

// newInstance returns a random name for this store's writes.
func newInstance() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Listen implements store.Notifier: it listens on a connection of its own (outside the pool)
// and calls changed with the ids of sagas and transactions that other instances changed, until
// ctx ends. listening is told when it starts listening and when it stops (a lost connection,
// after which it connects again).
func (s *Store) Listen(ctx context.Context, changed func(table string, ids []uuid.UUID), listening func(bool)) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, changed, listening)
		listening(false)
		if ctx.Err() != nil {
			return
		}
		_ = err // the caller polls meanwhile; the next attempt says whether the database is back
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *Store) listenOnce(ctx context.Context, changed func(table string, ids []uuid.UUID), listening func(bool)) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("listen: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, table := range []string{"sagas", "transactions"} {
		if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{channelPrefix + table}.Sanitize()); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	listening(true)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		writer, list, ok := strings.Cut(n.Payload, "|")
		if !ok || writer == s.instance {
			continue // this instance's own change, which it announced itself
		}
		var ids []uuid.UUID
		for _, raw := range strings.Split(list, ",") {
			if id, err := uuid.Parse(raw); err == nil {
				ids = append(ids, id)
			}
		}
		changed(strings.TrimPrefix(n.Channel, channelPrefix), ids)
	}
}

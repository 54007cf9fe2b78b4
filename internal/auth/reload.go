package auth

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ReloadCheck is how often at most a CredentialsFile looks whether its file changed.
const ReloadCheck = time.Second

// fileStamp tells whether a file changed: another file at the path (a rename, a new symlink
// target, as with mounted secrets), another modification time or another size.
type fileStamp struct{ info os.FileInfo }

func stampOf(path string) (fileStamp, error) {
	info, err := os.Stat(path)
	return fileStamp{info}, err
}

func (a fileStamp) same(b fileStamp) bool {
	return a.info != nil && b.info != nil && os.SameFile(a.info, b.info) &&
		a.info.ModTime().Equal(b.info.ModTime()) && a.info.Size() == b.info.Size()
}

// CredentialsFile is a credentials file that is read again when it changes, so that tokens and
// certificate identities are added or revoked without a restart. A file that no longer parses
// is logged, and the last credentials that parsed stay in force.
type CredentialsFile struct {
	path  string
	log   *slog.Logger
	every time.Duration
	cur   atomic.Pointer[Credentials]
	// next is when the file is looked at again, in Unix nanoseconds.
	next atomic.Int64

	mu      sync.Mutex // held by the call that looks at the file
	stamp   fileStamp
	lastErr string
}

// LoadCredentialsFile reads and parses the credentials file at path; its errors name the file
// and the line. log receives the reloads and the problems of later versions of the file.
func LoadCredentialsFile(path string, log *slog.Logger) (*CredentialsFile, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &CredentialsFile{path: path, log: log, every: ReloadCheck}
	stamp, err := stampOf(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	creds, err := readCredentials(path)
	if err != nil {
		return nil, err
	}
	f.stamp = stamp
	f.cur.Store(creds)
	f.next.Store(time.Now().Add(f.every).UnixNano())
	return f, nil
}

func readCredentials(path string) (*Credentials, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	return ParseCredentials(path, data)
}

// Current returns the credentials in force, after reading the file again if it changed since
// it was last looked at (at most once per ReloadCheck; a caller that finds another looking
// does not wait).
func (f *CredentialsFile) Current() *Credentials {
	now := time.Now()
	if now.UnixNano() >= f.next.Load() && f.mu.TryLock() {
		f.next.Store(now.Add(f.every).UnixNano())
		f.reload()
		f.mu.Unlock()
	}
	return f.cur.Load()
}

// reload reads the file again if it changed. f.mu must be held.
func (f *CredentialsFile) reload() {
	stamp, err := stampOf(f.path)
	if err == nil && stamp.same(f.stamp) {
		return
	}
	var creds *Credentials
	if err == nil {
		creds, err = readCredentials(f.path)
	}
	if err != nil {
		// Reported once per problem, not at every check while the file stays broken.
		if msg := err.Error(); msg != f.lastErr {
			f.lastErr = msg
			f.log.Error("credentials file changed but cannot be used; the previous credentials stay in force", "err", msg)
		}
		return
	}
	f.stamp, f.lastErr = stamp, ""
	f.cur.Store(creds)
	f.log.Info("credentials file reloaded", "file", f.path, "tokens", len(creds.tokens), "certificates", len(creds.certs))
}

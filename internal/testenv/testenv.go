// Package testenv gives each test its own isolated slice of the machine's real PostgreSQL and
// RabbitMQ: a fresh schema in the test database and a fresh RabbitMQ vhost, both removed when the
// test ends. Tests in different packages therefore run in parallel without sharing state.
//
// Environment (defaults in brackets):
//
//	SAGACOORD_TEST_DATABASE_URL  [postgres://postgres@127.0.0.1:5432/test?sslmode=disable]
//	SAGACOORD_TEST_AMQP_URL      [amqp://guest:guest@127.0.0.1:5672/]
//	SAGACOORD_TEST_RABBIT_API    [http://guest:guest@127.0.0.1:15672] (management plugin)
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DatabaseURL returns the URL of the test database.
func DatabaseURL() string {
	if u := os.Getenv("SAGACOORD_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// AMQPURL returns the URL of the test broker's default vhost.
func AMQPURL() string {
	if u := os.Getenv("SAGACOORD_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

func rabbitAPI() string {
	if u := os.Getenv("SAGACOORD_TEST_RABBIT_API"); u != "" {
		return u
	}
	return "http://guest:guest@127.0.0.1:15672"
}

// Name returns a short random name with the given prefix, safe as a schema or vhost name.
func Name(prefix string) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return prefix + hex.EncodeToString(b[:])
}

// Schema creates a fresh schema and returns a database URL whose connections use it as their
// search_path. The schema is dropped when the test ends.
func Schema(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	schema := Name("t_")
	conn, err := pgx.Connect(ctx, DatabaseURL())
	if err != nil {
		t.Fatalf("testenv: connect to PostgreSQL at %s: %v (is it running? scripts/services.sh starts it; see docs/contributing.md)", redact(DatabaseURL()), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("testenv: create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, DatabaseURL())
		if err != nil {
			t.Logf("testenv: drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Logf("testenv: drop schema %s: %v", schema, err)
		}
	})
	return WithSearchPath(DatabaseURL(), schema)
}

// WithSearchPath returns databaseURL with its connections' search_path set to schema.
func WithSearchPath(databaseURL, schema string) string {
	u, err := url.Parse(databaseURL)
	if err != nil {
		panic(fmt.Sprintf("testenv: bad database URL: %v", err))
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Pool opens a pool on a fresh schema (see Schema) and closes it when the test ends.
func Pool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	dbURL := Schema(t)
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatalf("testenv: open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool, dbURL
}

// VHost creates a fresh RabbitMQ vhost that guest may use and returns its AMQP URL. The vhost is
// deleted when the test ends, with everything in it.
func VHost(t testing.TB) string {
	t.Helper()
	vhost := Name("t_")
	if err := rabbitPut("/api/vhosts/"+vhost, ""); err != nil {
		// Fall back to rabbitmqctl when the management plugin is off.
		if out, err2 := exec.Command("rabbitmqctl", "add_vhost", vhost).CombinedOutput(); err2 != nil {
			t.Fatalf("testenv: create vhost: API: %v; rabbitmqctl: %v: %s (is RabbitMQ running? scripts/services.sh starts it; see docs/contributing.md)", err, err2, out)
		}
		if out, err2 := exec.Command("rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*").CombinedOutput(); err2 != nil {
			t.Fatalf("testenv: vhost permissions: %v: %s", err2, out)
		}
	} else if err := rabbitPut("/api/permissions/"+vhost+"/guest", `{"configure":".*","write":".*","read":".*"}`); err != nil {
		t.Fatalf("testenv: vhost permissions: %v", err)
	}
	t.Cleanup(func() {
		if err := rabbitDo(http.MethodDelete, "/api/vhosts/"+vhost, ""); err != nil {
			if out, err2 := exec.Command("rabbitmqctl", "delete_vhost", vhost).CombinedOutput(); err2 != nil {
				t.Logf("testenv: delete vhost %s: %v; %v: %s", vhost, err, err2, out)
			}
		}
	})
	u, err := url.Parse(AMQPURL())
	if err != nil {
		t.Fatalf("testenv: bad AMQP URL: %v", err)
	}
	u.Path = "/" + vhost
	return u.String()
}

// RabbitUser creates a RabbitMQ user named name, with a random password and no tags, that may
// configure, write and read (rabbitmqctl set_permissions' regular expressions) on the vhost of
// vhostURL (a URL from VHost), and returns that vhost's URL for the user. Users are global to
// the broker, so give a name no other test uses (Name). The user is deleted when the test ends.
func RabbitUser(t testing.TB, vhostURL, name, configure, write, read string) string {
	t.Helper()
	u, err := url.Parse(vhostURL)
	if err != nil {
		t.Fatalf("testenv: bad vhost URL: %v", err)
	}
	vhost := strings.TrimPrefix(u.Path, "/")
	password := Name("pw")
	user, _ := json.Marshal(map[string]string{"password": password, "tags": ""})
	perms, _ := json.Marshal(map[string]string{"configure": configure, "write": write, "read": read})
	if err := rabbitPut("/api/users/"+url.PathEscape(name), string(user)); err != nil {
		if out, err2 := exec.Command("rabbitmqctl", "add_user", name, password).CombinedOutput(); err2 != nil {
			t.Fatalf("testenv: create user %s: API: %v; rabbitmqctl: %v: %s", name, err, err2, out)
		}
	}
	t.Cleanup(func() {
		if err := rabbitDo(http.MethodDelete, "/api/users/"+url.PathEscape(name), ""); err != nil {
			if out, err2 := exec.Command("rabbitmqctl", "delete_user", name).CombinedOutput(); err2 != nil {
				t.Logf("testenv: delete user %s: %v; %v: %s", name, err, err2, out)
			}
		}
	})
	if err := rabbitPut("/api/permissions/"+url.PathEscape(vhost)+"/"+url.PathEscape(name), string(perms)); err != nil {
		if out, err2 := exec.Command("rabbitmqctl", "set_permissions", "-p", vhost, name, configure, write, read).CombinedOutput(); err2 != nil {
			t.Fatalf("testenv: permissions of %s: API: %v; rabbitmqctl: %v: %s", name, err, err2, out)
		}
	}
	u.User = url.UserPassword(name, password)
	return u.String()
}

func rabbitPut(path, body string) error { return rabbitDo(http.MethodPut, path, body) }

func rabbitDo(method, path, body string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	u, err := url.Parse(rabbitAPI())
	if err != nil {
		return err
	}
	user := u.User
	u.User = nil
	req, err := http.NewRequestWithContext(ctx, method, u.String()+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	if user != nil {
		pw, _ := user.Password()
		req.SetBasicAuth(user.Username(), pw)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return nil
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

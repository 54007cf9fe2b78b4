package testenv

import (
	"io"
	"net"
	"net/url"
	"strconv"
	"testing"
)

// Later stands for a service that is down now and comes up when the test says: URL is the
// service's URL with its address replaced by a free port where nothing listens, and Up starts
// forwarding that port to the real service.
type Later struct {
	URL    string
	port   int
	target string
}

// ServiceLater returns a Later for the service at raw (a database or broker URL).
func ServiceLater(t testing.TB, raw string) *Later {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("service URL: %v", err)
	}
	l := &Later{port: freePort(t), target: u.Host}
	u.Host = "127.0.0.1:" + strconv.Itoa(l.port)
	l.URL = u.String()
	return l
}

// Up listens on the port and copies every connection to and from the real service, until the
// test ends.
func (l *Later) Up(t testing.TB) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(l.port))
	if err != nil {
		t.Fatalf("listen on the free port (taken meanwhile?): %v", err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go pipe(c, l.target)
		}
	}()
}

func pipe(c net.Conn, target string) {
	defer c.Close()
	u, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer u.Close()
	go func() { _, _ = io.Copy(u, c); _ = u.Close() }()
	_, _ = io.Copy(c, u)
}

// freePort returns a port of 127.0.0.1 that nobody listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// FreeAddr returns an address of 127.0.0.1 that nobody listens on right now.
func FreeAddr(t testing.TB) string { return "127.0.0.1:" + strconv.Itoa(freePort(t)) }

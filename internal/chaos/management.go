package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// QueueStat is one queue's depth.
type QueueStat struct {
	Name    string `json:"name"`
	Ready   int    `json:"messages_ready"`
	Unacked int    `json:"messages_unacknowledged"`
}

// management is a RabbitMQ management API. Its client is the run's own, so the run can close
// its idle connections when it ends.
type management struct {
	base   string
	client *http.Client
}

func newManagement(base string) management {
	return management{base: base, client: &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}}
}

// close drops the client's idle connections.
func (m management) close() {
	if m.client != nil {
		m.client.CloseIdleConnections()
	}
}

func (m management) do(ctx context.Context, method, path, body string, out any) error {
	u, err := url.Parse(m.base)
	if err != nil {
		return err
	}
	userinfo := u.User
	u.User = nil
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(u.String(), "/")+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	if userinfo != nil {
		pw, _ := userinfo.Password()
		req.SetBasicAuth(userinfo.Username(), pw)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := m.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (m management) createVHost(ctx context.Context, vhost string) error {
	if err := m.do(ctx, http.MethodPut, "/api/vhosts/"+url.PathEscape(vhost), "", nil); err != nil {
		return fmt.Errorf("create vhost %s with the management API %s (is the rabbitmq_management plugin on? `make services` enables it): %w", vhost, redactURL(m.base), err)
	}
	return m.do(ctx, http.MethodPut, "/api/permissions/"+url.PathEscape(vhost)+"/guest", `{"configure":".*","write":".*","read":".*"}`, nil)
}

func (m management) deleteVHost(ctx context.Context, vhost string) error {
	return m.do(ctx, http.MethodDelete, "/api/vhosts/"+url.PathEscape(vhost), "", nil)
}

func (m management) queueStats(ctx context.Context, vhost string) ([]QueueStat, error) {
	var qs []QueueStat
	err := m.do(ctx, http.MethodGet, "/api/queues/"+url.PathEscape(vhost)+"?columns=name,messages_ready,messages_unacknowledged", "", &qs)
	return qs, err
}

package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sagacoord/sagacoord/protocol"
)

// rabbitTimeout bounds one call to RabbitMQ's management API: a page never waits longer for it;
// maxQueueListBytes bounds the answer read.
const (
	rabbitTimeout     = 3 * time.Second
	maxQueueListBytes = 16 << 20
)

// queueStats is what the management API reports of one queue.
type queueStats struct {
	Name                     string  `json:"name"`
	Ready                    int     `json:"messages_ready"`
	Unacked                  int     `json:"messages_unacknowledged"`
	Consumers                int     `json:"consumers"`
	PublishRate, DeliverRate float64 `json:"-"`
	Stats                    struct {
		Publish    struct{ Rate float64 } `json:"publish_details"`
		DeliverGet struct{ Rate float64 } `json:"deliver_get_details"`
	} `json:"message_stats"`
}

// rabbitAPI reads the participants' queues from RabbitMQ's management API. Its URL carries the
// credentials, which are sent as basic authentication and never shown: String is redacted.
type rabbitAPI struct {
	base         string // scheme://host[:port][/path], without credentials
	user, secret string
	vhost        string
	client       *http.Client
}

// newRabbitAPI parses raw (http://user:password@host:15672); nil when raw is empty.
func newRabbitAPI(raw, vhost string) (*rabbitAPI, error) {
	if raw == "" {
		return nil, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("RabbitMQ management API URL %q: want http(s)://user:password@host:15672", redactURL(raw))
	}
	a := &rabbitAPI{vhost: vhost, client: &http.Client{Timeout: rabbitTimeout}}
	if u.User != nil {
		a.user = u.User.Username()
		a.secret, _ = u.User.Password()
	}
	u.User = nil
	a.base = strings.TrimSuffix(u.String(), "/")
	if a.vhost == "" {
		a.vhost = "/"
	}
	return a, nil
}

// String is the API's address without its password.
func (a *rabbitAPI) String() string { return a.base + " (vhost " + a.vhost + ")" }

// participantQueues returns the participants' queues of the vhost, by name.
func (a *rabbitAPI) participantQueues(ctx context.Context) (map[string]queueStats, error) {
	ctx, cancel := context.WithTimeout(ctx, rabbitTimeout)
	defer cancel()
	q := url.Values{"columns": {"name,messages_ready,messages_unacknowledged,consumers,message_stats"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/api/queues/"+url.PathEscape(a.vhost)+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	if a.user != "" {
		req.SetBasicAuth(a.user, a.secret)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("RabbitMQ management API at %s does not answer: %v", a, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("RabbitMQ management API at %s answered %s", a, resp.Status)
	}
	var all []queueStats
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxQueueListBytes)).Decode(&all); err != nil {
		return nil, fmt.Errorf("RabbitMQ management API at %s: the queue list does not parse: %v", a, err)
	}
	out := map[string]queueStats{}
	for _, qs := range all {
		if strings.HasPrefix(qs.Name, protocol.QueuePrefix) {
			qs.PublishRate, qs.DeliverRate = qs.Stats.Publish.Rate, qs.Stats.DeliverGet.Rate
			out[qs.Name] = qs
		}
	}
	return out, nil
}

// CheckRabbitAPI reports whether raw is a management API URL the console can use.
func CheckRabbitAPI(raw string) error {
	_, err := newRabbitAPI(raw, "/")
	return err
}

// redactURL hides a URL's password.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(a URL that does not parse)"
	}
	return u.Redacted()
}

// VHostOf returns the vhost of an AMQP URL, as the management API names it: "/" for the
// default.
func VHostOf(amqpURL string) string {
	u, err := url.Parse(amqpURL)
	if err != nil {
		return "/"
	}
	v := strings.TrimPrefix(u.Path, "/")
	if v == "" {
		return "/"
	}
	return v
}

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// links runs toxiproxy in-process: one proxy per faulted link (PROCESS->postgres,
// PROCESS->rabbitmq), through which that process's URL points.
type links struct {
	mu      sync.Mutex
	server  *toxiproxy.ApiServer
	proxies map[string]*toxiproxy.Proxy
	seq     int
}

func newLinks() *links {
	return &links{
		server:  toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop()),
		proxies: map[string]*toxiproxy.Proxy{},
	}
}

// add creates the proxy of a link towards upstream (host:port) and returns its listen address.
func (l *links) add(name, upstream string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p, ok := l.proxies[name]; ok {
		return p.Listen, nil
	}
	p := toxiproxy.NewProxy(l.server, name, "127.0.0.1:0", upstream)
	if err := l.server.Collection.Add(p, true); err != nil {
		return "", fmt.Errorf("proxy %s: %w", name, err)
	}
	l.proxies[name] = p
	return p.Listen, nil
}

func (l *links) get(name string) (*toxiproxy.Proxy, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.proxies[name]
	if !ok {
		return nil, fmt.Errorf("no proxy for link %s", name)
	}
	return p, nil
}

// down cuts every connection of the link and refuses new ones until up.
func (l *links) down(name string) error {
	p, err := l.get(name)
	if err != nil {
		return err
	}
	p.Stop()
	return nil
}

func (l *links) up(name string) error {
	p, err := l.get(name)
	if err != nil {
		return err
	}
	if err := p.Start(); err != nil && err != toxiproxy.ErrProxyAlreadyStarted {
		return fmt.Errorf("link %s up again on %s: %w", name, p.Listen, err)
	}
	return nil
}

// toxic adds a toxic to both directions of the link and returns the names to remove.
func (l *links) toxic(name, kind string, attrs map[string]any) ([]string, error) {
	p, err := l.get(name)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.seq++
	seq := l.seq
	l.mu.Unlock()
	var names []string
	for _, stream := range []string{"upstream", "downstream"} {
		tn := fmt.Sprintf("%s_%s_%d", kind, stream, seq)
		b, _ := json.Marshal(map[string]any{"name": tn, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attrs})
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(string(b))); err != nil {
			return names, fmt.Errorf("add %s toxic to %s: %w", kind, name, err)
		}
		names = append(names, tn)
	}
	return names, nil
}

func (l *links) removeToxics(name string, toxics []string) error {
	p, err := l.get(name)
	if err != nil {
		return err
	}
	for _, t := range toxics {
		if err := p.Toxics.RemoveToxic(context.Background(), t); err != nil {
			return fmt.Errorf("remove toxic %s from %s: %w", t, name, err)
		}
	}
	return nil
}

func (l *links) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.proxies {
		p.Stop()
	}
	l.proxies = map[string]*toxiproxy.Proxy{}
}

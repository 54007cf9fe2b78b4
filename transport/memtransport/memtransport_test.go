package memtransport_test

import (
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/transport/memtransport"
	"github.com/sagacoord/sagacoord/transport/transporttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	var mu sync.Mutex
	brokers := map[*testing.T]*memtransport.Broker{}
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		mu.Lock()
		b, ok := brokers[t]
		if !ok {
			b = memtransport.NewBroker()
			brokers[t] = b
		}
		mu.Unlock()
		tr := memtransport.New(b)
		t.Cleanup(func() { _ = tr.Close() })
		return tr
	})
}

package testenv

import (
	"sync"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/faultproxy"
)

// Faults says what a FaultProxy does to requests (faultproxy.Faults).
type Faults = faultproxy.Faults

// ProxyStats is a snapshot of a FaultProxy's counters (faultproxy.Stats).
type ProxyStats = faultproxy.Stats

// FaultProxy is a faultproxy.Proxy owned by a test: Addr, Set, Stats and
// ResetStats are the proxy's; Close reports a proxy that does not shut down
// cleanly as a test error.
type FaultProxy struct {
	*faultproxy.Proxy
	t    testing.TB
	once sync.Once
}

// StartFaultProxy starts a proxy on a free 127.0.0.1 port forwarding to
// target (host:port, plain http) and registers t.Cleanup to close it. It
// starts without faults.
func StartFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	p, err := faultproxy.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	fp := &FaultProxy{Proxy: p, t: t}
	t.Cleanup(fp.Close)
	return fp
}

// Close stops the proxy (faultproxy.Proxy.Close) and fails the test when
// connections or handlers are still open 10 seconds later. It is idempotent.
func (p *FaultProxy) Close() {
	p.once.Do(func() {
		if err := p.Proxy.Close(); err != nil {
			p.t.Errorf("%v", err)
		}
	})
}

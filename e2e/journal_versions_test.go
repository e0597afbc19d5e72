package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestJournalVersions: the journal of a cluster of every supported etcd
// version replays into a data dir that same version starts from, with every
// key, its revisions and version, and its lease.
func TestJournalVersions(t *testing.T) {
	for _, v := range serverVersions {
		t.Run(v, func(t *testing.T) {
			repo := t.TempDir()
			c := startCluster(t, v, newSpecs(t, "v", 1))
			cl := c.client()
			a := startAgent(t, "v1", nil, journalAgentArgs(repo, c.endpoints(), 0, "200ms")...)
			waitFirstSnapshot(t, []*agentProc{a})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			lease, err := cl.Grant(ctx, 300)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 30; i++ {
				k := fmt.Sprintf("/v/%02d", i%10) // overwrites: versions 1..3
				opts := []clientv3.OpOption{}
				if i%3 == 0 {
					opts = append(opts, clientv3.WithLease(lease.ID))
				}
				if _, err := cl.Put(ctx, k, fmt.Sprintf("%s-%d", v, i), opts...); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := cl.Delete(ctx, "/v/09"); err != nil {
				t.Fatal(err)
			}
			want, err := cl.Get(ctx, "/v/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			waitSealed(t, []*agentProc{a}, want.Header.Revision, 20*time.Second)
			a.stop(t, 20*time.Second)
			c.killAll()

			specs := newSpecs(t, "r", 1)
			mustCLI(t, nil, "restore", "latest", "--repo", repo, "--data-dir", specs[0].DataDir, "--name", specs[0].Name,
				"--initial-cluster", fmt.Sprintf("%s=%s", specs[0].Name, specs[0].PeerURL))
			r := startCluster(t, v, specs)
			rc := r.client()
			got, err := rc.Get(ctx, "/v/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			if got.Header.Revision != want.Header.Revision || len(got.Kvs) != len(want.Kvs) {
				t.Fatalf("restored: revision %d, %d keys; want revision %d, %d keys", got.Header.Revision, len(got.Kvs), want.Header.Revision, len(want.Kvs))
			}
			for i, kv := range got.Kvs {
				w := want.Kvs[i]
				if string(kv.Key) != string(w.Key) || string(kv.Value) != string(w.Value) || kv.CreateRevision != w.CreateRevision ||
					kv.ModRevision != w.ModRevision || kv.Version != w.Version || kv.Lease != w.Lease {
					t.Errorf("restored %s = %q c%d m%d v%d lease %x; want %s = %q c%d m%d v%d lease %x", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease,
						w.Key, w.Value, w.CreateRevision, w.ModRevision, w.Version, w.Lease)
				}
			}
			ttl, err := rc.TimeToLive(ctx, lease.ID, clientv3.WithAttachedKeys())
			if err != nil || ttl.GrantedTTL != 300 || ttl.TTL <= 0 || len(ttl.Keys) == 0 {
				t.Errorf("lease after restore: %+v, %v", ttl, err)
			}
		})
	}
}

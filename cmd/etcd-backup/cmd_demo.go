package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-backup/etcd-backup/internal/backup"
	"github.com/etcd-backup/etcd-backup/internal/embedded"
	"github.com/etcd-backup/etcd-backup/internal/etcd"
	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/journal/writer"
	"github.com/etcd-backup/etcd-backup/internal/repo"
	"github.com/etcd-backup/etcd-backup/internal/restore"
	"github.com/etcd-backup/etcd-backup/internal/storage/backends"
)

type demoOptions struct {
	Keys int
	Dir  string
	Keep bool
}

func (o *demoOptions) AddFlags(fs *pflag.FlagSet) {
	fs.IntVar(&o.Keys, "keys", 2000, "number of keys to write")
	fs.StringVar(&o.Dir, "dir", "", "work directory (default: a new temporary directory)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the work directory (repository, data dirs) afterwards")
}

func newDemoCommand(g *Globals) *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "The whole story in-process: back up a 3-member cluster, lose it, restore it",
		Long: `Start a 3-member etcd cluster in this process on loopback ports, write keys,
back it up to a local repository in a temporary directory, journal every
change after the backup (as 'agent --continuous' does) while more keys are
written and then a batch of keys is deleted by mistake, destroy every
member's data, restore all three members on new peer URLs (as on new
machines) to the revision just before the mistake, start them, and check
every key on every member. Needs nothing but this binary.`,
		Example: `  etcd-backup demo
  etcd-backup demo --keys 20000 --dir /tmp/demo --keep`,
		Args: maxArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return runDemo(cmd.Context(), g, &o) },
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runDemo(ctx context.Context, g *Globals, o *demoOptions) error {
	dir := o.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "etcd-backup-demo-"); err != nil {
			return err
		}
	}
	if !o.Keep {
		defer os.RemoveAll(dir)
	}
	say := func(format string, args ...any) { fmt.Fprintf(g.stdout, format+"\n", args...) }
	quiet := slog.New(slog.DiscardHandler)
	start := time.Now()

	// 1. A live cluster with data.
	specs, err := embedded.NewSpecs(filepath.Join(dir, "old"), "m", 3)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "old"), 0o700); err != nil {
		return err
	}
	cl, err := embedded.Start(ctx, specs, "")
	if err != nil {
		return fmt.Errorf("start demo cluster: %w", err)
	}
	defer func() { cl.Close() }()
	say("1. started a 3-member etcd cluster: %s", embedded.InitialCluster(specs))
	cli, err := etcd.Connect(etcd.Config{Endpoints: cl.Endpoints()})
	if err != nil {
		return err
	}
	defer cli.Close()
	want, err := writeDemoKeys(ctx, cli.Client, o.Keys)
	if err != nil {
		return err
	}
	say("2. wrote %d keys", len(want))

	// 2. Back up.
	// An absolute path: a relative --dir with a colon must not read as a URL.
	repoDir, err := filepath.Abs(filepath.Join(dir, "repo"))
	if err != nil {
		return err
	}
	b, err := backends.Open(ctx, repoDir, backends.Options{Create: true})
	if err != nil {
		return err
	}
	r, err := repo.Open(ctx, b, "demo")
	if err != nil {
		return err
	}
	m, err := backup.Run(ctx, cli, r, backup.Options{Logger: quiet})
	if err != nil {
		return err
	}
	say("3. backed up member %s at revision %d: %d bytes, %d stored, as %s in %s", m.MemberName, m.Revision, m.RawSize, m.StoredSize, m.ID, repoDir)

	// 2b. Journal every change after the backup, as agent --continuous does;
	// more writes, then a mistake.
	late, good, bad, deleted, segments, err := demoJournal(ctx, cli, r, m, o.Keys/4)
	if err != nil {
		return err
	}
	for k, v := range late {
		want[k] = v
	}
	say("4. journaled every change after the backup: %d more keys up to revision %d, then a mistake at revision %d (%d keys deleted); %d journal segments",
		len(late), good, bad, deleted, segments)

	// 3. Disaster.
	cli.Close()
	cl.Close()
	for _, s := range specs {
		if err := os.RemoveAll(s.DataDir); err != nil {
			return err
		}
	}
	say("5. stopped every member and deleted every data dir")

	// 4. Restore every member, on new peer URLs, from the same backup.
	newSpecs, err := embedded.NewSpecs(filepath.Join(dir, "new"), "m", 3)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "new"), 0o700); err != nil {
		return err
	}
	// To the revision just before the mistake: the snapshot, then its
	// journal replayed up to there (restore --to-revision).
	snap, jp, err := restore.Resolve(ctx, r, "", repo.Selector{}, restore.Target{Revision: good})
	if err != nil {
		return err
	}
	var res restore.Result
	for _, s := range newSpecs {
		plan, err := restore.MakePlan(restore.Spec{DataDir: s.DataDir, Name: s.Name, InitialCluster: embedded.InitialCluster(newSpecs)})
		if err != nil {
			return err
		}
		if res, err = restore.Execute(ctx, r, snap, plan, restore.Options{Logger: quiet, Journal: jp}); err != nil {
			return err
		}
	}
	say("6. restored all 3 members to revision %d, just before the mistake (backup %s + %d journaled revisions replayed), onto new peer URLs: %s",
		res.Revision, snap.ID, res.Replayed.Records, embedded.InitialCluster(newSpecs))
	cl, err = embedded.Start(ctx, newSpecs, "")
	if err != nil {
		return fmt.Errorf("start restored cluster: %w", err)
	}

	// 5. Check every key on every member.
	for _, s := range newSpecs {
		mc, err := etcd.Connect(etcd.Config{Endpoints: []string{s.ClientURL}})
		if err != nil {
			return err
		}
		err = checkDemoKeys(ctx, mc.Client, want)
		mc.Close()
		if err != nil {
			return fmt.Errorf("member %s: %w", s.Name, err)
		}
	}
	say("7. every one of the %d keys is back on every member; the demo took %.1fs", len(want), time.Since(start).Seconds())
	if o.Keep {
		say("work directory kept: %s", dir)
	}
	return nil
}

func writeDemoKeys(ctx context.Context, cli *clientv3.Client, n int) (map[string][]byte, error) {
	want := make(map[string][]byte, n)
	var ops []clientv3.Op
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("/registry/demo/%06d", i)
		v := bytes.Repeat([]byte(fmt.Sprintf("value-%d;", i)), 1+i%20)
		want[k] = v
		ops = append(ops, clientv3.OpPut(k, string(v)))
		if len(ops) == 100 || i == n-1 { // one transaction per 100 keys
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				return nil, fmt.Errorf("write demo keys: %w", err)
			}
			ops = ops[:0]
		}
	}
	return want, nil
}

func checkDemoKeys(ctx context.Context, cli *clientv3.Client, want map[string][]byte) error {
	resp, err := cli.Get(ctx, "/registry/demo/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	if len(resp.Kvs) != len(want) {
		return fmt.Errorf("found %d keys, want %d", len(resp.Kvs), len(want))
	}
	for _, kv := range resp.Kvs {
		if !bytes.Equal(want[string(kv.Key)], kv.Value) {
			return fmt.Errorf("key %s has the wrong value", kv.Key)
		}
	}
	return nil
}

// demoJournal journals the cluster from backup m on (writer.Run, as the
// agent does) while it writes n more keys, then deletes a tenth of all keys
// with one prefix delete: the mistake. It returns the keys written, the last
// good revision, the mistake's revision and the number of segments sealed.
func demoJournal(ctx context.Context, cli *etcd.Client, r *repo.Repo, m *format.Manifest, n int) (late map[string][]byte, good, bad int64, deleted, segments int, err error) {
	jctx, stop := context.WithCancel(ctx)
	defer stop()
	var sealed atomic.Int64
	var sealedSegs atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- writer.Run(jctx, writer.Config{
			Client: cli.Client, Repo: r, Flush: 200 * time.Millisecond, Writer: "demo",
			OnSealed: func(s writer.Sealed) { sealed.Store(s.End); sealedSegs.Add(1) },
		}, m)
	}()
	late = make(map[string][]byte, n)
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("/registry/demo/late/%06d", i)
		v := []byte(fmt.Sprintf("written after the backup, %d", i))
		resp, perr := cli.Put(ctx, k, string(v))
		if perr != nil {
			err = perr
			return nil, 0, 0, 0, 0, fmt.Errorf("write demo keys: %w", perr)
		}
		late[k], good = v, resp.Header.Revision
	}
	resp, err := cli.Delete(ctx, "/registry/demo/000", clientv3.WithPrefix())
	if err != nil {
		return nil, 0, 0, 0, 0, fmt.Errorf("the demo's mistake: %w", err)
	}
	bad, deleted = resp.Header.Revision, int(resp.Deleted)
	deadline := time.Now().Add(30 * time.Second)
	for sealed.Load() < bad {
		select {
		case err := <-done:
			return nil, 0, 0, 0, 0, fmt.Errorf("journal stopped: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, 0, 0, 0, 0, fmt.Errorf("the journal did not reach revision %d in 30s", bad)
		}
	}
	stop()
	if err := <-done; err != nil {
		return nil, 0, 0, 0, 0, fmt.Errorf("journal: %w", err)
	}
	return late, good, bad, deleted, int(sealedSegs.Load()), nil
}

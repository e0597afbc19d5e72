package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/etcd"
)

type promoteOptions struct {
	etcd     etcdOptions
	Name     string
	PeerURLs string
	Timeout  time.Duration
}

func (o *promoteOptions) AddFlags(fs *pflag.FlagSet) {
	o.etcd.AddFlags(fs)
	fs.StringVar(&o.Name, "name", "", "the learner's etcd --name")
	fs.StringVar(&o.PeerURLs, "initial-advertise-peer-urls", "", "or: the learner's peer URLs")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "give up if the learner has not caught up by then")
}

func newPromoteCommand(g *Globals) *cobra.Command {
	var o promoteOptions
	cmd := &cobra.Command{
		Use:   "promote",
		Short: "Promote a learner to a voting member once it has caught up",
		Long: `Wait until the learner (added by 'join' and started) has caught up with the
leader, then promote it to a voting member. There are no fixed sleeps: etcd
itself refuses to promote a learner that is not in sync, and promote retries
with backoff until it accepts or --timeout passes. Promoting a member that is
already a voter does nothing and succeeds.`,
		Example: `  etcd-backup promote --endpoints https://10.0.0.1:2379 --name m2
  etcd-backup promote --endpoints http://127.0.0.1:2379 --initial-advertise-peer-urls http://10.0.0.3:2380 --timeout 30m`,
		Args: maxArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return runPromote(cmd.Context(), g, &o) },
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runPromote(ctx context.Context, g *Globals, o *promoteOptions) error {
	var peers []string
	for _, u := range strings.Split(o.PeerURLs, ",") {
		if u = strings.TrimSpace(u); u != "" {
			peers = append(peers, u)
		}
	}
	if o.Name == "" && len(peers) == 0 {
		return usagef("give the learner's --name or --initial-advertise-peer-urls")
	}
	cli, err := o.etcd.connect()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	m, err := cli.WaitMember(ctx, g.log, o.Name, peers)
	if err != nil {
		return err
	}
	if !m.IsLearner {
		fmt.Fprintf(g.stdout, "member %s (%s) is already a voting member\n", m.Name, etcd.HexID(m.ID))
		return nil
	}
	start := time.Now()
	if err := cli.Promote(ctx, g.log, m.ID); err != nil {
		return err
	}
	name := m.Name
	if name == "" {
		name = o.Name
	}
	fmt.Fprintf(g.stdout, "member %s (%s) promoted to a voting member after %.1fs\n", name, etcd.HexID(m.ID), time.Since(start).Seconds())
	return nil
}

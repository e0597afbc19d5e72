package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/etcd-backup/etcd-backup/internal/format"
	"github.com/etcd-backup/etcd-backup/internal/version"
)

func newVersionCommand(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version, commit, supported etcd versions and repository format",
		Args:  maxArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(g.stdout, "etcd-backup %s\ncommit: %s\ngo: %s\netcd servers: %s\nrepository format: %d\n",
				version.Version, version.CommitOrVCS(), runtime.Version(), version.SupportedEtcd, format.Version)
			return nil
		},
	}
}

func versionString() string { return version.Version }

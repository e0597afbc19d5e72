package version

import "runtime/debug"

// Set at build time: -ldflags "-X github.com/etcd-backup/etcd-backup/internal/version.Version=v0.1.0".
var (
	Version = "0.1.0-dev"
	Commit  = ""
)

// SupportedEtcd lists the etcd server versions restores are tested against.
const SupportedEtcd = "3.4, 3.5, 3.6, 3.7"

// CommitOrVCS returns Commit, or the VCS revision Go embedded, if any.
func CommitOrVCS() string {
	if Commit != "" {
		return Commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

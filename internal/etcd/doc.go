// Package etcd talks to a live etcd cluster through clientv3: connection
// flags as etcdctl has them, member status, choosing the member to stream a
// snapshot from, and the snapshot stream itself.
//
// It must not import etcd's server packages (only the packages that run
// etcd's own code offline or in-process do; see internal/datadir) nor
// storage or repository packages.
//
// Imports: go.etcd.io/etcd/client/v3
package etcd

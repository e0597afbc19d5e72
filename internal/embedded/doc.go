// Package embedded runs etcd members in-process (go.etcd.io/etcd/server/v3/embed)
// on loopback ports: the cluster `demo` backs up and restores, restore drills,
// and the integration tests. It owns no backup logic.
//
// It imports no package of this module.
//
// Imports: go.etcd.io/etcd/server/v3
package embedded

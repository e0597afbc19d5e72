// Package etcdfill fills an etcd cluster to a database size with
// reproducible data of one profile, for the benchmark commands (bench,
// bench/faults): "random" (incompressible 1-8 KiB values) or "k8s"
// (Kubernetes-like objects under /registry/...), written by a few concurrent
// writers in Txns of many puts.
//
// Imports: go.etcd.io/etcd/client/v3
package etcdfill

// Package datadir does everything offline to an etcd member's data
// directory: tells whether a live etcd holds it, builds a new one from a
// snapshot file with etcd's own restore code (etcdutl), moves an existing
// one aside, and swaps the new one into place only when it is complete.
//
// It is the only importer of etcd's server and etcdutl packages; it must not
// import storage or repository packages.
package datadir

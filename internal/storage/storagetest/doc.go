// Package storagetest is the conformance suite for storage.Backend: Run
// checks the whole contract documented on storage.Backend (atomic,
// create-only Put of streams of unknown length; ErrNotFound and ErrExists;
// lexical List; cleanup after failed and cancelled Puts; concurrency).
// Every backend's tests call Run; a backend that passes it is interchangeable
// with the others.
//
// It is imported only from _test.go files. It must not import backends (they
// import it in their tests) nor etcd packages.
//
// Imports: internal/storage
package storagetest

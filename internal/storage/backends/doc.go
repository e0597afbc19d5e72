// Package backends maps a repository URL to the storage.Backend that serves
// it (Open), wrapped once in storage.Wrap (retries, resumed reads, stall
// bounds, the name rule). It is the only package that imports the concrete
// backends (tests aside); commands call Open and then use the
// storage.Backend interface alone.
//
// Supported: plain paths and file:// URLs (package local), s3:// URLs
// (package s3), gs:// URLs (package gcs), azblob:// URLs (package azblob),
// rclone:REMOTE:PATH through the rclone binary (package rclone). Other schemes are rejected with storage.ErrBadURL until their
// backend exists.
//
// It must not import etcd packages or anything that knows about backups or
// the repository layout.
//
// Imports: internal/storage, internal/storage/azblob, internal/storage/gcs, internal/storage/local, internal/storage/rclone, internal/storage/s3
package backends

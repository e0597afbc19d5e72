// Package s3 implements storage.Backend on Amazon S3 and S3-compatible
// servers (MinIO, Ceph RGW, versitygw, ...) with minio-go.
//
// It owns the mapping of repository URLs of the form
//
//	s3://bucket/prefix?region=R&endpoint=http://host:port&path-style=true
//
// to a Config (ParseURL), credential lookup (the standard AWS chain: the
// AWS_* environment variables, the shared credentials file with AWS_PROFILE,
// then IAM: web identity, ECS, EC2 instance role) and the upload strategy.
//
// Objects up to one part (8 MiB) go in a single PUT; larger ones, or streams
// of unknown length, in a multipart upload whose parts are read into two
// reused buffers (one filling while the other uploads), so a Put holds at
// most 16 MiB of object data whatever the object's size. minio-go's PutObject
// is not used for streams: with size -1 it allocates a part buffer per call
// and, in v7.4.1, drops If-None-Match from CompleteMultipartUpload, so it
// silently overwrites.
//
// Uploads are create-only: a HEAD check fails early when the object exists
// (and is the only protection on servers that ignore conditional writes),
// then PutObject or CompleteMultipartUpload carries "If-None-Match: *", so of
// concurrent writers of one name exactly one wins (checked against versitygw
// and MinIO; AWS S3 documents the same). Each Put stores a random token in the object's
// metadata (x-amz-meta-put-token) so that, when minio-go retries a request
// whose response was lost and the retry meets the object the first try
// created, Put knows the object is its own. A failed or cancelled multipart
// upload is aborted, so its parts do not linger.
//
// Some S3-compatible servers ignore If-None-Match on PUT (they overwrite)
// or reject it as NotImplemented. CheckCreateOnly (storage.CreateOnlyChecker)
// finds out, once per process per endpoint and bucket, by writing a probe
// object twice under a fresh ".tmp-create-only-probe-<token>" name at the
// repository root with If-None-Match: * (the second must get 412) and
// removing it; List never shows such names and RemoveStale removes probes
// left behind. Commands that write call it at open and warn; see
// docs/providers.md for why nothing is refused. Checked against versitygw
// and MinIO, and against both behind internal/faultproxy stripping the
// header.
//
// It must not import etcd packages or anything that knows about backups or
// the repository layout; it stores opaque named objects only.
//
// Imports: internal/storage, github.com/minio/minio-go/v7
package s3

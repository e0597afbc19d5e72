// Package rclone implements storage.Backend on any rclone remote by running
// the user's rclone binary, as restic does: no rclone library is linked in,
// so existing rclone.conf files, encrypted configs (RCLONE_CONFIG_PASS),
// RCLONE_* variables and every backend of the installed rclone keep working.
//
// Repository URLs have the form
//
//	rclone:REMOTE:PATH        e.g. rclone:s3remote:bucket/etcd, rclone:gdrive:backups
//	rclone::BACKEND,k=v:PATH  an on-the-fly remote (rclone's ":s3,provider=AWS:bucket")
//	rclone:/absolute/path     the local file system, through rclone
//
// Config.ConfigFile is passed as --config; when it is empty rclone's own
// lookup applies ($RCLONE_CONFIG, then ~/.config/rclone/rclone.conf, ...).
// Location shows "rclone:REMOTE:PATH" with connection-string parameters
// (",key=value" after the remote name, which may hold secrets) replaced by
// ",…"; rclone's messages quoted in errors are redacted the same way.
//
// # One rclone process per operation
//
//   - Stat: rclone lsjson --stat. A directory (or, on bucket-based remotes,
//     a name with nothing stored under it) is storage.ErrNotFound.
//   - Get: rclone cat --no-traverse --error-on-no-transfer --files-from-raw -
//     on the root, with the name on stdin: one HEAD and one GET on S3, no
//     directory listing. A missing object is exit code 9 ("no files
//     transferred"); plain "rclone cat remote:path" cannot be used because it
//     prints nothing and succeeds for a missing object (and concatenates every
//     file below a directory). Get waits for the first byte or the exit, so a
//     missing object is reported by Get itself; later failures of rclone are
//     returned by Read instead of a silent EOF. Get is GetRange from byte 0
//     (storage.RangeGetter): a read that fails mid-body is resumed by
//     storage.Wrap with "rclone cat --offset N" after a stat; see "Resumed
//     reads".
//   - List: rclone lsjson -R --files-only from the root, with
//     --include "/<dir>/**" for the deepest directory the prefix names
//     (escaped for rclone's glob syntax), so rclone lists only that subtree,
//     one directory listing per path level. The names are sorted here.
//   - Remove: rclone deletefile. rclone's "is a directory or doesn't exist"
//     is also its message for an unreachable server, so a failed deletefile
//     is followed by a Stat to tell ErrNotFound from the real error.
//   - Put: rclone rcat streams the reader through a pipe into
//     "<dir>/.tmp-<random>" next to the target, then "rclone moveto
//     --ignore-existing" publishes it. The statistics moveto logs at the end
//     (-v --use-json-log, "renames": 1 or 0) tell whether it moved or found
//     the target existing (ErrExists; the temporary object is deleted); when
//     they are missing or moveto failed, a Stat of the temporary name decides
//     (gone means published). There is no Stat before uploading: callers
//     check for existing objects themselves (repo, transfer), so it would
//     cost an rclone start on every Put for a case that does not happen; Put
//     of an existing name uploads, then refuses and deletes the upload.
//     rcat reads stdin as it uploads (S3: 5 MiB parts, 4 in flight), the
//     pipe gives back-pressure, and this process copies with one 256 KiB
//     buffer, so memory is bounded whatever the object's size. On a reader
//     error or a cancelled ctx rcat gets SIGTERM before it can see the end of
//     its stdin (rclone then aborts an S3 multipart upload; SIGKILL follows
//     after 10 s), and the temporary object is deleted. rclone 1.60 misses
//     the abort when SIGTERM comes while it is creating the multipart upload
//     (seen when the reader fails within the first MiB), so a failed rcat is
//     also followed by "rclone backend cleanup -o max-age=0 <dir>/.tmp-<random>",
//     which aborts the uploads under that unique key only (remotes without
//     the command fail it; ignored). List never shows names with a ".tmp-"
//     element, and object names may not use one. Once rcat has finished,
//     publishing is not interrupted by ctx: its outcome is then known rather
//     than half done.
//
// Every command gets --ask-password=false (never prompt; stdin is the data or
// /dev/null), --retries 1 --low-level-retries 2 (fail within seconds:
// storage.Wrap retries storage.IsRetryable errors, this package does not),
// --contimeout 15s, --timeout Config.Stall (rclone's IO idle timeout: a
// connection that moves no byte for that long fails; backends.Open passes
// the wrapper's Policy.Stall), and --use-server-modtime (ModTime is when the
// server stored the object; it also saves a HEAD per object when listing
// S3). rclone's S3 backend tries a request several times even with
// --low-level-retries 2 (its pacer and aws-sdk-go both retry: a server that
// never answers saw 12 requests, each abandoned after --timeout, for one
// lsjson --stat), so one rclone run against a hung server lasts several
// stall bounds; storage.Wrap's watchdog abandons a try (and
// stops rclone) that moves no byte for Policy.Stall. New's check of the root
// runs through storage.Retry, under the policy backends.Open puts in ctx. rclone logs at its default
// level (NOTICE), except moveto at INFO (file names and statistics); never
// -vv or --dump, so it does not print request headers or configuration
// values. Its stderr is kept (last 16 KiB) for error messages. rclone runs
// with this process's environment (Config.Env overrides it), so RCLONE_*
// variables apply, but the flags above override their RCLONE_* forms.
//
// Tested with Debian's rclone 1.60.1; older versions may lack some of the
// flags used (lsjson --stat, --files-from-raw, --error-on-no-transfer).
//
// rclone's exit codes are coarse: almost every failure is 1, including
// network errors, so retryable errors are recognised by exit code 5 or by
// rclone's message (connection refused or reset, a connection closed
// without an answer (aws-sdk-go's "send request failed", Go's ": EOF"),
// timeouts, 5xx, throttling); TLS and configuration errors are permanent. Exit code 3 (directory not
// found) and 4 (file not found) mean storage.ErrNotFound.
//
// # Resumed reads
//
// rclone cat reports neither an ETag nor a generation, so the pin of a
// resumed read (storage.RangeGetter) is the object's size and modification
// time from "rclone lsjson --stat" ("<size>@<RFC 3339 time>"; with
// --use-server-modtime the server's time, whole seconds on S3). A first
// read (byte 0, pin "") runs rclone cat alone and returns pin "": a stat
// costs one more rclone run, 0.1-0.17 s on a 2-core test machine
// (TestLatency with ETCD_BACKUP_RCLONE_PERF=1: Get 138 ms local, 164 ms S3;
// a resumed Get, stat and cat, 326 ms and 268 ms), which would double the
// cost of every read for reads that are almost never cut (repo.List reads
// every manifest). A resumed read (byte N > 0, or any read given a pin)
// stats the object first, fails with storage.ErrChanged when the pin
// differs from the one given or the object has fewer than N bytes, returns
// an empty reader when it has exactly N (S3 servers may answer "cat
// --offset" at the end with the whole object: versitygw does), and else
// runs rclone cat --offset N; its pin holds the read from then on.
//
// The object is therefore pinned from the first resumption, not from the
// first byte: an object replaced between the start of a read and its first
// cut would be spliced. That is acceptable because this repository never
// writes an object twice under one name (Put is create-only and names carry
// unique IDs), so the pin only guards against the theoretical; equally, two
// versions of equal size stored within the same second on S3 look alike.
// The stat and the cat are two requests, so a replacement between them is
// not seen either.
//
// A resumed read knows how many bytes are due: more is an error (the
// remote ignored the offset and sent the object from its start; resumed
// reads of this Remote fail from then on rather than deliver it as the
// tail), and so is less with rclone succeeding.
//
// # Faults
//
// The fault tests (faults_test.go) run the real rclone against versitygw
// behind testenv.FaultProxy. Through 10% of the requests answered 503
// SlowDown and 5% of the bodies cut, the whole contract holds, mostly by
// rclone's own per-request retries; cut reads resume (half the bodies cut:
// every byte is transferred about once). With storage unreachable, Get,
// Stat, List, Remove and a Put from a seekable source give up with
// storage.ErrUnavailable once Policy.Timeout is spent. A Put from a stream
// (a snapshot) is not retried: rclone rcat reads up to a part from the
// stream before its first request, so no step of it is replayable; it fails
// with a retryable error for the caller to start again, leaving nothing
// behind.
//
// # Cost
//
// Each rclone process costs about 0.1 s of CPU and 0.1-0.2 s of wall time to
// start (Debian's dynamically linked 1.60 binary; TestLatency measures it)
// and has a resident size of about 42 MiB (60 MiB for rcat to a local remote,
// 85 MiB to S3 with its part buffers; TestPutMemory). A Put runs two (rcat,
// moveto), a Get, Stat, List or Remove one; a refused Put, a Remove of a
// missing object and a failed Put run one or two more, a resumed read two
// (lsjson --stat, cat --offset). Open runs one to check the root. Reading many small objects one by one (repo.List reads every
// manifest) therefore costs about 0.1 s per object. On S3-like remotes the
// publishing moveto is a server-side copy plus delete, so a Put writes the
// object twice on the server (no extra traffic from here).
//
// # Limits
//
//   - Create-only is exact between Puts of one process (publishing is
//     serialised per name here) but not between processes: rclone checks the
//     target right before moving, so two processes publishing the same name
//     within that instant could both succeed, the later one replacing the
//     object. Names are unique per backup (IDs carry the time and random
//     bits), so this is theoretical; the S3 backend, which uses
//     If-None-Match, has no such window.
//   - If publishing fails half way (S3: the copy succeeded, deleting the
//     temporary object did not), Put returns an error although the object is
//     visible; a retry then gets ErrExists.
//   - Temporary objects of a process killed with SIGKILL stay behind (under
//     ".tmp-" names, invisible to List), as do S3 multipart uploads of an
//     rclone process killed with SIGKILL; a bucket lifecycle rule
//     (AbortIncompleteMultipartUpload) cleans the latter.
//   - rclone's S3 backend streams objects of unknown size in chunk_size parts,
//     at most 10000 of them: 48.8 GiB with the default 5 MiB (rclone prints a
//     NOTICE saying so). Set chunk_size in the remote for larger snapshots.
//   - On remotes without server-side move, rclone's moveto downloads and
//     uploads the object again.
//   - On file-system-like remotes (local, sftp, ...) Remove leaves empty
//     directories behind; List does not show them.
//   - OAuth remotes (Drive, OneDrive, ...) refresh tokens into the config
//     file, which must then be writable.
//
// # AWS_CA_BUNDLE and rclone 1.60
//
// Debian's rclone 1.60 (aws-sdk-go v1) cannot start its S3 backend when
// AWS_CA_BUNDLE is set to anything non-empty: an existing bundle fails with
// "LoadCustomCABundleError: unable to load custom CA bundle, HTTPClient's
// transport unsupported type" (rclone's HTTP transport is not the SDK's), a
// missing file with "failed to open custom CA bundle PEM file". Many
// machines set AWS_CA_BUNDLE for other AWS tools. New therefore checks the
// root once with the caller's environment and, only when that fails with
// LoadCustomCABundleError while AWS_CA_BUNDLE is set, runs rclone without
// AWS_CA_BUNDLE from then on (CABundleDropped reports it). TLS is still
// verified, against the system roots (SSL_CERT_FILE, SSL_CERT_DIR); for a
// private CA use rclone's own option, --ca-cert or RCLONE_CA_CERT. Other
// backends ignore AWS_CA_BUNDLE, and an rclone that honours it keeps it.
//
// It must not import etcd packages or anything that knows about backups or
// the repository layout; it stores opaque named objects only.
//
// Imports: internal/storage
package rclone

// Package gcs implements storage.Backend on Google Cloud Storage with
// cloud.google.com/go/storage (its JSON API over HTTP).
//
// It owns the mapping of repository URLs of the form
//
//	gs://bucket/prefix[?endpoint=http://host:port]
//
// to a Config (ParseURL) and the upload strategy. Credentials are
// Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, the gcloud
// application-default login, the service account of a GCE VM, GKE workload
// or Cloud Run service); an emulator named by $STORAGE_EMULATOR_HOST, or an
// http:// endpoint in the URL, gets none.
//
// Objects up to 4 MiB go in a single request from a pooled buffer, with
// their CRC32C so the server refuses damaged bytes; larger ones, and streams
// of unknown length, in a resumable upload of 16 MiB chunks, the one chunk
// buffer the client holds, so a Put holds at most 16 MiB of object data
// whatever the object's size. The upload is finalised only when the stream
// ends: a failed or cancelled Put leaves nothing visible.
//
// Uploads are create-only: every write carries ifGenerationMatch=0
// (Conditions.DoesNotExist), which GCS checks when the object is created, so
// of concurrent writers of one name exactly one wins and the others get 412
// (ErrExists). Each Put stores a random token in the object's metadata
// (put-token) so that, when a request whose answer was lost is sent again and
// meets the object the first try created, Put knows the object is its own.
//
// Reads are pinned by generation: a resumed read (storage.RangeGetter) asks
// for the generation the first read returned, on the condition that it is
// still the live one, so a replaced object reads as storage.ErrChanged
// instead of being spliced in.
//
// Retries belong to storage.Wrap: the client's are off (RetryNever), except
// that a chunk of a resumable upload, which only the client's buffer can
// resend, is retried by the client under the policy storage.StepPolicy
// gives (the same error classification, backoff bounds and budget). The
// client itself reopens a read cut mid-body once, at the offset reached
// and pinned to the generation, before Wrap's resumption takes over.
// Connections that move no byte for the stall bound fail
// (storage.IdleTimeoutDialer), so a hung request ends and is retried.
//
// It must not import etcd packages or anything that knows about backups or
// the repository layout; it stores opaque named objects only.
//
// Imports: internal/storage, cloud.google.com/go/storage
package gcs

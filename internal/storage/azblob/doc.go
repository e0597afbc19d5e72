// Package azblob implements storage.Backend on Azure Blob Storage (and
// Azurite, its emulator) with the Azure SDK for Go.
//
// It owns the mapping of repository URLs of the form
//
//	azblob://container/prefix?account=NAME&endpoint=https://host[:port][/path]
//
// to a Config (ParseURL), credential lookup (FromEnv: a connection string
// in AZURE_STORAGE_CONNECTION_STRING; or AZURE_STORAGE_ACCOUNT with
// AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN; with the account alone,
// Microsoft Entra ID through azidentity's DefaultAzureCredential: workload
// identity, managed identity, Azure CLI) and the upload strategy.
//
// Objects up to one block (8 MiB) go in a single Put Blob; larger ones, or
// streams of unknown length, are staged as blocks read into two reused
// buffers (one filling while the other uploads), then committed with Put
// Block List, so a Put holds at most 16 MiB of object data whatever the
// object's size. The SDK's UploadStream is not used: it retries nothing
// itself once the SDK's retries are off, so one failed block would fail
// the whole stream, while staging blocks here lets each block and the
// commit be retried (storage.Retry) under the repository's budget.
//
// Uploads are create-only: a HEAD check fails early when the blob exists,
// then Put Blob or Put Block List carries "If-None-Match: *", so of
// concurrent writers of one name exactly one wins. Block IDs carry a random
// token per Put, so concurrent writers never commit each other's blocks,
// and the blob's metadata carries the same token so that a write retried
// after a lost response recognises its own blob. A failed Put leaves only
// uncommitted blocks, which are invisible and which Azure discards.
//
// The SDK's own retries are off (storage.Wrap retries); connections that
// move no byte for the stall bound fail (storage.IdleTimeoutDialer).
// Secrets never appear in Location or in errors: a SAS token's query is
// removed from URLs in transport errors.
//
// It must not import etcd packages or anything that knows about backups or
// the repository layout; it stores opaque named objects only.
//
// Imports: internal/storage, github.com/Azure/azure-sdk-for-go/sdk
package azblob

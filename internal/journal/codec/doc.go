// Package codec is the byte framing of journal streams (docs/format.md,
// "Journal segments", "Payload"): records (one per etcd revision, with its
// events and the leases they first refer to), their frames with a CRC-32C
// each, and the seal that ends a framing-2 stream. It checks every rule of
// the format while reading and never touches storage.
//
// Imports: internal/format
package codec

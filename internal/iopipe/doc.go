// Package iopipe overlaps the stages of a stream on separate goroutines:
// ReadAhead keeps reading a source (a download) while its consumer
// decodes, and WriteBehind keeps writing (to a file) while its producer
// decodes the next bytes. Restore uses both, so that download,
// decompression and checks, and the disk writes of one payload run at once
// instead of one after the other. Memory is bounded by the buffers given.
//
// Imports: none
package iopipe

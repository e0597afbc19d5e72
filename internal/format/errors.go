package format

import "errors"

var (
	// ErrIntegrity: a checksum, size or structural check failed. The data
	// must not be trusted.
	ErrIntegrity = errors.New("integrity check failed")
	// ErrVersion: the object was written in a format version this binary
	// does not know.
	ErrVersion = errors.New("unsupported repository format version")
	// ErrKey: a recipient or identity is malformed or missing, or the payload
	// is encrypted and no identity given opens it.
	ErrKey = errors.New("wrong or missing key")
)

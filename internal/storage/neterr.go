package storage

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
)

// IsPermanentNetErr reports transport errors that retrying cannot fix: TLS
// verification failures, a host name that does not resolve, and plain HTTP
// spoken to an HTTPS client. Backends classify them as not retryable, so a
// wrong endpoint or certificate fails at once instead of after
// --storage-timeout.
func IsPermanentNetErr(err error) bool {
	var (
		verifyErr   *tls.CertificateVerificationError
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidCert x509.CertificateInvalidError
		recordErr   tls.RecordHeaderError
		dnsErr      *net.DNSError
	)
	switch {
	case errors.As(err, &verifyErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr),
		errors.As(err, &invalidCert), errors.As(err, &recordErr):
		return true
	case errors.As(err, &dnsErr):
		return dnsErr.IsNotFound
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return true
	}
	return false
}

// ContextReader reads r until ctx is done: then every Read returns ctx's
// error, so a copy from a reader that never blocks stops with its caller.
type ContextReader struct {
	Ctx context.Context
	R   io.Reader
}

func (c ContextReader) Read(p []byte) (int, error) {
	if err := c.Ctx.Err(); err != nil {
		return 0, err
	}
	return c.R.Read(p)
}

package faultproxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7/pkg/signer"
)

// signingCreds are the S3 credentials the proxy signs rewritten requests
// with (StripIfNoneMatch).
type signingCreds struct {
	accessKey, secretKey, region string
}

// SetCredentials gives the proxy the S3 credentials and region of the
// server behind it, with which it signs the requests it changes
// (Faults.StripIfNoneMatch). It may be called at any time.
func (p *Proxy) SetCredentials(accessKey, secretKey, region string) {
	p.mu.Lock()
	p.creds = &signingCreds{accessKey: accessKey, secretKey: secretKey, region: region}
	p.mu.Unlock()
}

// maxStripBody bounds the body of a request the proxy rewrites: a single
// PUT (the S3 backend sends up to 8 MiB in one) or a
// CompleteMultipartUpload's XML.
const maxStripBody = 64 << 20

// stripIfNoneMatch removes If-None-Match from r and signs r again (SigV4,
// payload hashed) for the same Host. It reads the whole body; an
// aws-chunked body is decoded, and the checksums of its trailer become
// headers.
func stripIfNoneMatch(r *http.Request, c *signingCreds) error {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxStripBody+1))
	if err != nil {
		return err
	}
	if len(raw) > maxStripBody {
		return fmt.Errorf("fault proxy: request body over %d bytes", maxStripBody)
	}
	h := r.Header.Clone()
	data := raw
	if strings.HasPrefix(h.Get("X-Amz-Content-Sha256"), "STREAMING-") || strings.Contains(h.Get("Content-Encoding"), "aws-chunked") {
		var trailer http.Header
		if data, trailer, err = decodeAWSChunked(raw); err != nil {
			return err
		}
		for k, vs := range trailer {
			if strings.HasPrefix(strings.ToLower(k), "x-amz-checksum-") {
				h[k] = vs
			}
		}
		var enc []string
		for e := range strings.SplitSeq(h.Get("Content-Encoding"), ",") {
			if e = strings.TrimSpace(e); e != "" && e != "aws-chunked" {
				enc = append(enc, e)
			}
		}
		h.Del("Content-Encoding")
		if len(enc) > 0 {
			h.Set("Content-Encoding", strings.Join(enc, ","))
		}
		h.Del("X-Amz-Decoded-Content-Length")
		h.Del("X-Amz-Trailer")
	}
	for _, k := range []string{"If-None-Match", "Authorization", "X-Amz-Date", "Content-Length", "Transfer-Encoding"} {
		h.Del(k)
	}
	sum := sha256.Sum256(data)
	h.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:]))

	// Sign a copy that has only what the signature covers: method, path,
	// query, Host and the headers.
	sreq := http.Request{Method: r.Method, URL: r.URL, Host: r.Host, Header: h, ContentLength: int64(len(data))}
	signed := signer.SignV4(sreq, c.accessKey, c.secretKey, "", c.region)
	r.Header = signed.Header
	r.ContentLength = int64(len(data))
	r.TransferEncoding = nil
	r.Body = io.NopCloser(bytes.NewReader(data))
	return nil
}

// decodeAWSChunked decodes an aws-chunked body: chunks of
// "<hex size>[;chunk-signature=...]\r\n<data>\r\n" up to one of size 0, then
// trailer lines "name:value\r\n" up to an empty line or the end.
func decodeAWSChunked(b []byte) ([]byte, http.Header, error) {
	br := bufio.NewReader(bytes.NewReader(b))
	var out bytes.Buffer
	bad := func(what string) ([]byte, http.Header, error) {
		return nil, nil, fmt.Errorf("fault proxy: malformed aws-chunked body: %s", what)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return bad("no chunk header")
		}
		size, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 {
			return bad("chunk size " + strconv.Quote(size))
		}
		if n == 0 {
			break
		}
		if _, err := io.CopyN(&out, br, n); err != nil {
			return bad("short chunk")
		}
		if crlf, err := br.ReadString('\n'); err != nil || strings.TrimRight(crlf, "\r\n") != "" {
			return bad("no CRLF after a chunk")
		}
	}
	trailer := http.Header{}
	for {
		line, err := br.ReadString('\n')
		line = strings.TrimRight(line, "\r\n")
		if k, v, ok := strings.Cut(line, ":"); ok {
			trailer.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		if err != nil || line == "" {
			break
		}
	}
	return out.Bytes(), trailer, nil
}

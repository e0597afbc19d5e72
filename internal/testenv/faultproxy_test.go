package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// proxiedS3 starts versitygw and a fault proxy in front of it, and returns a
// minio client that talks to the proxy (no retries).
func proxiedS3(t *testing.T) (*S3Server, *FaultProxy, *minio.Client) {
	t.Helper()
	srv := StartS3(t)
	p := StartFaultProxy(t, srv.Endpoint)
	return srv, p, proxyClient(t, srv, p.Addr)
}

func proxyClient(t *testing.T, srv *S3Server, addr string) *minio.Client {
	t.Helper()
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := minio.New(addr, &minio.Options{
		Creds:        credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, ""),
		Region:       srv.Region,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1,
		Transport:    tr,
	})
	if err != nil {
		t.Fatalf("minio client for %s: %v", addr, err)
	}
	return c
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func isUnexpectedEOF(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || (err != nil && strings.Contains(err.Error(), "unexpected EOF"))
}

func TestFaultProxyPassThroughS3(t *testing.T) {
	srv, p, c := proxiedS3(t)
	ctx := context.Background()
	data := randBytes(t, 1<<20)
	key := "dir/a b+c~%=&.bin" // characters the path encoding and the signature must agree on

	// minio-go signs PUTs over plain http with the aws-chunked streaming
	// signature: Content-Encoding, X-Amz-Decoded-Content-Length and the
	// chunk signatures in the body must all arrive unchanged.
	info, err := c.PutObject(ctx, srv.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
	if err != nil {
		t.Fatalf("PUT through the proxy: %v", err)
	}
	// Unknown size: multipart upload (POST, PUT parts, POST complete).
	if _, err := c.PutObject(ctx, srv.Bucket, "multi", io.MultiReader(bytes.NewReader(data)), -1, minio.PutObjectOptions{PartSize: 5 << 20}); err != nil {
		t.Fatalf("multipart PUT through the proxy: %v", err)
	}

	for _, k := range []string{key, "multi"} {
		obj, err := c.GetObject(ctx, srv.Bucket, k, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(obj)
		obj.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("GET %q through the proxy: %d bytes, err %v; want the %d bytes put", k, len(got), err, len(data))
		}
	}
	// Range and If-Match pass through.
	opts := minio.GetObjectOptions{}
	_ = opts.SetRange(1000, 1999)
	_ = opts.SetMatchETag(info.ETag)
	obj, err := c.GetObject(ctx, srv.Bucket, key, opts)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || !bytes.Equal(got, data[1000:2000]) {
		t.Fatalf("ranged GET: %d bytes, err %v; want bytes 1000..1999", len(got), err)
	}
	opts = minio.GetObjectOptions{}
	_ = opts.SetMatchETag("0123456789abcdef0123456789abcdef")
	if _, err := c.StatObject(ctx, srv.Bucket, key, minio.StatObjectOptions(opts)); minio.ToErrorResponse(err).StatusCode != http.StatusPreconditionFailed {
		t.Errorf("HEAD with a wrong If-Match: %v, want 412", err)
	}
	if st, err := c.StatObject(ctx, srv.Bucket, key, minio.StatObjectOptions{}); err != nil || st.Size != int64(len(data)) {
		t.Fatalf("HEAD through the proxy: %+v, %v", st, err)
	}
	var listed []string
	for o := range c.ListObjects(ctx, srv.Bucket, minio.ListObjectsOptions{Prefix: "dir/", Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		listed = append(listed, o.Key)
	}
	if len(listed) != 1 || listed[0] != key {
		t.Errorf("list through the proxy: %q, want [%q]", listed, key)
	}
	if err := c.RemoveObject(ctx, srv.Bucket, key, minio.RemoveObjectOptions{}); err != nil {
		t.Fatalf("DELETE through the proxy: %v", err)
	}

	s := p.Stats()
	var byMethod int64
	for _, n := range s.ByMethod {
		byMethod += n
	}
	if s.Requests == 0 || byMethod != s.Requests || s.ByMethod["DELETE"] != 1 || s.ByMethod["POST"] != 2 {
		t.Errorf("stats %+v: methods do not add up to requests, or not 1 DELETE and 2 POST", s)
	}
	if s.Injected503+s.Cut+s.Stalled+s.Dropped != 0 {
		t.Errorf("faults injected without faults set: %+v", s)
	}
	if s.BytesReceived < 2*int64(len(data)) {
		t.Errorf("BytesReceived = %d, want at least the 2 uploads (%d)", s.BytesReceived, 2*len(data))
	}
}

func TestFaultProxyStats(t *testing.T) {
	srv, p, c := proxiedS3(t)
	ctx := context.Background()
	data := randBytes(t, 300_000)
	if _, err := c.PutObject(ctx, srv.Bucket, "k", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	p.ResetStats()
	obj, err := c.GetObject(ctx, srv.Bucket, "k", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GET: %d bytes, %v", len(got), err)
	}
	// Counters are exact as soon as the client has its answer; Active, a
	// gauge, drops when the handler returns.
	s := p.Stats()
	s.Active = 0
	want := ProxyStats{Requests: 1, ByMethod: map[string]int64{"GET": 1}, BytesSent: int64(len(data)), GetBodyBytes: int64(len(data))}
	if fmt.Sprint(s) != fmt.Sprint(want) {
		t.Errorf("after one GET: %+v, want %+v", s, want)
	}

	p.ResetStats()
	if _, err := c.PutObject(ctx, srv.Bucket, "k2", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	s = p.Stats()
	// aws-chunked adds chunk headers and signatures to the payload.
	if s.Requests != 1 || s.ByMethod["PUT"] != 1 || s.BytesReceived < int64(len(data)) || s.BytesReceived > int64(len(data))+4096 || s.GetBodyBytes != 0 {
		t.Errorf("after one PUT of %d bytes: %+v", len(data), s)
	}

	p.ResetStats()
	// Active is a gauge of requests in flight, not a counter: the handler
	// of the last request may still be returning; ResetStats leaves it.
	if s := p.Stats(); fmt.Sprint(ProxyStats{ByMethod: s.ByMethod, Active: 0, Requests: s.Requests, Injected503: s.Injected503,
		Cut: s.Cut, Stalled: s.Stalled, Dropped: s.Dropped, BytesSent: s.BytesSent, BytesReceived: s.BytesReceived,
		GetBodyBytes: s.GetBodyBytes}) != fmt.Sprint(ProxyStats{ByMethod: map[string]int64{}}) {
		t.Errorf("after ResetStats: %+v", s)
	}
}

func TestFaultProxy503(t *testing.T) {
	srv, p, c := proxiedS3(t)
	ctx := context.Background()
	p.Set(Faults{Error503: 1})
	data := randBytes(t, 100_000)
	_, err := c.PutObject(ctx, srv.Bucket, "k", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
	if er := minio.ToErrorResponse(err); er.StatusCode != http.StatusServiceUnavailable || er.Code != "SlowDown" {
		t.Fatalf("PUT with Error503=1: %v (%+v), want 503 SlowDown", err, er)
	}
	obj, err := c.GetObject(ctx, srv.Bucket, "k", minio.GetObjectOptions{})
	if err == nil {
		_, err = io.ReadAll(obj)
		obj.Close()
	}
	if er := minio.ToErrorResponse(err); er.StatusCode != http.StatusServiceUnavailable || er.Code != "SlowDown" {
		t.Errorf("GET with Error503=1: %v, want 503 SlowDown", err)
	}

	// On the wire: S3's status line and XML body; nothing reaches the server.
	resp, err := http.Get("http://" + p.Addr + "/" + srv.Bucket + "/k")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Status != "503 Slow Down" || resp.Header.Get("Content-Type") != "application/xml" ||
		!strings.Contains(string(body), "<Code>SlowDown</Code><Message>Please reduce your request rate.</Message>") {
		t.Errorf("raw GET: %s %q %s", resp.Status, resp.Header, body)
	}
	req, _ := http.NewRequest(http.MethodHead, "http://"+p.Addr+"/"+srv.Bucket+"/k", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("raw HEAD: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if _, err := srv.Client(t).StatObject(ctx, srv.Bucket, "k", minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != "NoSuchKey" {
		t.Errorf("object reached the server through an injected 503: %v", err)
	}
	s := p.Stats()
	if s.Injected503 != s.Requests || s.Requests < 3 || s.BytesReceived < int64(len(data)) || s.BytesReceived > int64(len(data))+4096 {
		t.Errorf("stats %+v: want every request answered 503 and the PUT body read (%d bytes)", s, len(data))
	}

	p.Set(Faults{})
	if _, err := c.PutObject(ctx, srv.Bucket, "k", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Errorf("PUT after clearing the faults: %v", err)
	}
}

func TestFaultProxyCutBody(t *testing.T) {
	srv, p, c := proxiedS3(t)
	ctx := context.Background()
	data := randBytes(t, 1<<20)
	if _, err := c.PutObject(ctx, srv.Bucket, "k", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	p.ResetStats()
	const gets = 5
	var received int64
	for seed := int64(1); seed <= gets; seed++ {
		p.Set(Faults{CutBody: 1, Seed: seed})
		obj, err := c.GetObject(ctx, srv.Bucket, "k", minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(obj)
		obj.Close()
		if !isUnexpectedEOF(err) || len(got) >= len(data) || !bytes.Equal(got, data[:len(got)]) {
			t.Fatalf("seed %d: GET of a cut body: %d of %d bytes, err %v; want a prefix and an unexpected EOF", seed, len(got), len(data), err)
		}
		received += int64(len(got))
	}
	s := p.Stats()
	if s.Cut != gets || s.Requests != gets || s.GetBodyBytes != received || s.BytesSent != received {
		t.Errorf("stats %+v: want %d cuts and %d body bytes sent", s, gets, received)
	}

	// Responses without a body are not cut.
	if _, err := c.StatObject(ctx, srv.Bucket, "k", minio.StatObjectOptions{}); err != nil {
		t.Errorf("HEAD with CutBody=1: %v", err)
	}
	if _, err := c.PutObject(ctx, srv.Bucket, "k2", bytes.NewReader(data[:10]), 10, minio.PutObjectOptions{}); err != nil {
		t.Errorf("PUT with CutBody=1: %v", err)
	}
	if n := p.Stats().Cut; n != gets {
		t.Errorf("Cut = %d after a HEAD and a PUT, want %d", n, gets)
	}
}

func TestFaultProxyStall(t *testing.T) {
	srv, p, c := proxiedS3(t)
	if _, err := c.PutObject(context.Background(), srv.Bucket, "k", strings.NewReader("v"), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	p.ResetStats()
	p.Set(Faults{Stall: 1})

	// The client times out; the stall ends when it hangs up.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := c.StatObject(ctx, srv.Bucket, "k", minio.StatObjectOptions{})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(fmt.Sprint(err), "deadline exceeded") {
		t.Fatalf("HEAD through a stall with a 300ms timeout: %v, want a timeout", err)
	}
	waitFor(t, "the stall to end after the client hung up", func() bool { return p.Stats().Active == 0 })

	// An upload stalls too, after its body is read.
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = c.PutObject(ctx, srv.Bucket, "k2", bytes.NewReader(make([]byte, 100_000)), 100_000, minio.PutObjectOptions{})
	cancel()
	if err == nil {
		t.Fatal("PUT through a stall succeeded")
	}
	waitFor(t, "the stalled PUT to end", func() bool { return p.Stats().Active == 0 })

	// StallFor ends a stall by closing the connection.
	p.Set(Faults{Stall: 1, StallFor: 100 * time.Millisecond})
	start := time.Now()
	_, err = c.StatObject(context.Background(), srv.Bucket, "k", minio.StatObjectOptions{})
	if err == nil || time.Since(start) < 100*time.Millisecond || time.Since(start) > 5*time.Second {
		t.Errorf("HEAD through a 100ms stall: %v after %v, want an error after about 100ms", err, time.Since(start))
	}
	waitFor(t, "the 100ms stall to end", func() bool { return p.Stats().Active == 0 })

	// Close ends stalls that would last forever, and returns promptly.
	p.Set(Faults{Stall: 1})
	const hung = 3
	errs := make(chan error, hung)
	for range hung {
		go func() {
			_, err := c.StatObject(context.Background(), srv.Bucket, "k", minio.StatObjectOptions{})
			errs <- err
		}()
	}
	waitFor(t, "the requests to stall", func() bool { return p.Stats().Active == hung })
	start = time.Now()
	p.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close with %d stalled requests took %v", hung, d)
	}
	for range hung {
		select {
		case err := <-errs:
			if err == nil {
				t.Error("a stalled request succeeded")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a stalled request did not end after Close")
		}
	}
	if s := p.Stats(); s.Stalled != 3+hung || s.Active != 0 {
		t.Errorf("stats %+v: want %d stalls, none active", s, 3+hung)
	}
	p.Close() // idempotent
}

func TestFaultProxyDown(t *testing.T) {
	srv, p, c := proxiedS3(t)
	ctx := context.Background()
	p.Set(Faults{Down: true})
	_, err := c.StatObject(ctx, srv.Bucket, "k", minio.StatObjectOptions{})
	if err == nil || minio.ToErrorResponse(err).StatusCode != 0 {
		t.Fatalf("HEAD while down: %v, want a transport error without a response", err)
	}
	if _, err := c.PutObject(ctx, srv.Bucket, "k", strings.NewReader("v"), 1, minio.PutObjectOptions{}); err == nil {
		t.Fatal("PUT while down succeeded")
	}
	if s := p.Stats(); s.Dropped < 2 || s.Dropped != s.Requests {
		t.Errorf("stats %+v: want every request dropped", s)
	}
	p.Set(Faults{})
	if _, err := c.PutObject(ctx, srv.Bucket, "k", strings.NewReader("v"), 1, minio.PutObjectOptions{}); err != nil {
		t.Errorf("PUT after Down cleared: %v", err)
	}
}

func TestFaultProxyLatency(t *testing.T) {
	srv, p, c := proxiedS3(t)
	ctx := context.Background()
	if _, err := c.PutObject(ctx, srv.Bucket, "k", strings.NewReader("v"), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	const lat = 200 * time.Millisecond
	p.Set(Faults{Latency: lat})
	for range 3 {
		start := time.Now()
		if _, err := c.StatObject(ctx, srv.Bucket, "k", minio.StatObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < lat {
			t.Errorf("HEAD with Latency=%v took %v", lat, d)
		}
	}
}

// recordingBackend is a plain http server that records what reaches it.
type recordingBackend struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recorded
	h    http.HandlerFunc // answers after recording; nil = 200 "ok"
}

type recorded struct {
	host, uri        string
	header           http.Header
	contentLength    int64
	transferEncoding []string
	body             []byte
	bodyErr          error
}

func startBackend(t *testing.T, h http.HandlerFunc) *recordingBackend {
	b := &recordingBackend{h: h}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.h != nil && r.Header.Get("X-Stream") != "" {
			b.h(w, r) // the handler reads the body itself
			return
		}
		body, err := io.ReadAll(r.Body)
		b.mu.Lock()
		b.reqs = append(b.reqs, recorded{r.Host, r.RequestURI, r.Header.Clone(), r.ContentLength, r.TransferEncoding, body, err})
		b.mu.Unlock()
		if b.h != nil {
			b.h(w, r)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *recordingBackend) last(t *testing.T) recorded {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.reqs) == 0 {
		t.Fatal("nothing reached the backend")
	}
	return b.reqs[len(b.reqs)-1]
}

func TestFaultProxyForwardsUnchanged(t *testing.T) {
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"abc"`)
		w.Header().Set("Content-Range", "bytes 0-4/10")
		w.Header()["X-Amz-Meta-Multi"] = []string{"1", "2"}
		w.Header().Set("Content-Length", "5")
		w.WriteHeader(http.StatusPartialContent)
		io.WriteString(w, "hello")
	})
	p := StartFaultProxy(t, be.Listener.Addr().String())
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()

	const uri = "/bkt/a%2Fb%20c+d%7E?partNumber=1&uploadId=x&odd=a;b"
	payload := []byte(strings.Repeat("0123456789", 1000))
	headers := map[string][]string{
		"Authorization":                {"AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"},
		"X-Amz-Date":                   {"20240101T000000Z"},
		"X-Amz-Content-Sha256":         {"STREAMING-AWS4-HMAC-SHA256-PAYLOAD"},
		"Content-Encoding":             {"aws-chunked"},
		"X-Amz-Decoded-Content-Length": {"9000"},
		"Range":                        {"bytes=0-4"},
		"If-Match":                     {`"abc"`},
		"If-None-Match":                {`"def"`},
		"X-Custom":                     {"a", "b"},
	}
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(payload)
		if chunked {
			body = io.MultiReader(body) // unknown length: Transfer-Encoding chunked
		}
		req, err := http.NewRequest(http.MethodPut, "http://"+p.Addr+uri, body)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range headers {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusPartialContent || string(got) != "hello" || resp.ContentLength != 5 ||
			resp.Header.Get("ETag") != `"abc"` || resp.Header.Get("Content-Range") != "bytes 0-4/10" ||
			len(resp.Header["X-Amz-Meta-Multi"]) != 2 {
			t.Errorf("response through the proxy: %s %q %q", resp.Status, resp.Header, got)
		}

		r := be.last(t)
		if r.host != p.Addr || r.uri != uri || !bytes.Equal(r.body, payload) || r.bodyErr != nil {
			t.Errorf("chunked=%v: backend got Host %q URI %q, %d body bytes (%v); want Host %q URI %q, the %d bytes sent",
				chunked, r.host, r.uri, len(r.body), r.bodyErr, p.Addr, uri, len(payload))
		}
		if chunked && (r.contentLength != -1 || fmt.Sprint(r.transferEncoding) != "[chunked]") {
			t.Errorf("chunked upload arrived with Content-Length %d, Transfer-Encoding %q", r.contentLength, r.transferEncoding)
		}
		if !chunked && (r.contentLength != int64(len(payload)) || r.header.Get("Content-Length") != fmt.Sprint(len(payload))) {
			t.Errorf("upload arrived with Content-Length %d / %q, want %d", r.contentLength, r.header.Get("Content-Length"), len(payload))
		}
		for k, v := range headers {
			if fmt.Sprint(r.header[k]) != fmt.Sprint(v) {
				t.Errorf("header %s arrived as %q, want %q", k, r.header[k], v)
			}
		}
		for k := range r.header {
			if strings.HasPrefix(k, "X-Forwarded") || k == "Forwarded" || k == "Accept-Encoding" || k == "Via" {
				t.Errorf("the proxy added header %s: %q", k, r.header[k])
			}
		}
	}
}

func TestFaultProxyStreams(t *testing.T) {
	const chunk = 64 << 10
	gotFirst := make(chan struct{})
	readFirst := make(chan struct{})
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		// Request: the first chunk arrives before the client sends the rest.
		if _, err := io.ReadFull(r.Body, make([]byte, chunk)); err != nil {
			t.Errorf("backend: %v", err)
			return
		}
		close(gotFirst)
		n, _ := io.Copy(io.Discard, r.Body)
		// Response: the client reads the first chunk before the rest is sent.
		w.Header().Set("Content-Length", fmt.Sprint(2*chunk))
		w.Write(make([]byte, chunk))
		w.(http.Flusher).Flush()
		select {
		case <-readFirst:
		case <-time.After(10 * time.Second):
			t.Error("backend: the client did not get the first chunk of the response")
			return
		}
		if n != 3*chunk {
			t.Errorf("backend: got %d more body bytes, want %d", n, 3*chunk)
		}
		w.Write(make([]byte, chunk))
	})
	p := StartFaultProxy(t, be.Listener.Addr().String())
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	pr, pw := io.Pipe()
	go func() {
		pw.Write(make([]byte, chunk))
		select {
		case <-gotFirst:
		case <-time.After(10 * time.Second):
			pw.CloseWithError(errors.New("the backend did not get the first chunk of the request"))
			return
		}
		pw.Write(make([]byte, 3*chunk))
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPut, "http://"+p.Addr+"/b/k", pr)
	req.ContentLength = 4 * chunk
	req.Header.Set("X-Stream", "1")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadFull(resp.Body, make([]byte, chunk)); err != nil {
		t.Fatal(err)
	}
	close(readFirst)
	if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != chunk {
		t.Errorf("rest of the response: %d bytes, %v", n, err)
	}
	if s := p.Stats(); s.BytesReceived != 4*chunk || s.BytesSent != 2*chunk || s.ByMethod["PUT"] != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestFaultProxyCutUnknownLength(t *testing.T) {
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n := 200_000
		if r.URL.Path == "/short" {
			n = 10
		}
		w.(http.Flusher).Flush() // no Content-Length: chunked
		w.Write(make([]byte, n))
	})
	p := StartFaultProxy(t, be.Listener.Addr().String())
	p.Set(Faults{CutBody: 1})
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for _, path := range []string{"/long", "/short"} {
		resp, err := client.Get("http://" + p.Addr + path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !isUnexpectedEOF(err) {
			t.Errorf("GET %s of a cut chunked body: %d bytes, %v; want an unexpected EOF", path, len(got), err)
		}
	}
	if s := p.Stats(); s.Cut != 2 {
		t.Errorf("stats %+v, want 2 cuts", s)
	}
}

func TestFaultProxySeed(t *testing.T) {
	be := startBackend(t, nil)
	p := StartFaultProxy(t, be.Listener.Addr().String())
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	pattern := func() string {
		p.Set(Faults{Error503: 0.5, Seed: 42})
		var b strings.Builder
		for range 40 {
			resp, err := client.Get("http://" + p.Addr + "/x")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			b.WriteString(map[int]string{200: ".", 503: "X"}[resp.StatusCode])
		}
		return b.String()
	}
	p.ResetStats()
	a, b := pattern(), pattern()
	if a != b || !strings.Contains(a, ".") || !strings.Contains(a, "X") {
		t.Errorf("same seed, two patterns: %s and %s; want the same mix of answers", a, b)
	}
	if s := p.Stats(); s.Injected503 != int64(2*strings.Count(a, "X")) || s.Requests != 80 {
		t.Errorf("stats %+v, pattern %s", s, a)
	}
}

func TestFaultProxyCloseLeaksNothing(t *testing.T) {
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 100_000))
	})
	tr := &http.Transport{}
	client := &http.Client{Transport: tr}
	base := runtime.NumGoroutine()

	p := StartFaultProxy(t, be.Listener.Addr().String())
	get := func(path string) error {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.Addr+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	put := func() error {
		resp, err := client.Post("http://"+p.Addr+"/up", "application/octet-stream", bytes.NewReader(make([]byte, 1<<20)))
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if err := get("/ok"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []Faults{{Down: true}, {Error503: 1}, {CutBody: 1}} {
		p.Set(f)
		get("/f")
		put()
	}
	// Requests stuck in stalls and latency when Close comes.
	waitFor(t, "the handlers of failed requests to return", func() bool { return p.Stats().Active == 0 })
	var wg sync.WaitGroup
	var hanging int64
	for _, f := range []Faults{{Stall: 1}, {Latency: time.Hour}} {
		p.Set(f)
		wg.Add(2)
		go func() { defer wg.Done(); get("/hang") }()
		go func() { defer wg.Done(); put() }()
		hanging += 2
		waitFor(t, "requests to hang", func() bool { return p.Stats().Active == hanging })
	}
	start := time.Now()
	p.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v", d)
	}
	wg.Wait()
	if err := get("/after"); err == nil {
		t.Error("request after Close succeeded")
	}
	if _, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
		t.Error("proxy still listening after Close")
	}
	tr.CloseIdleConnections()
	be.CloseClientConnections()

	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before the proxy started:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFaultProxyStripIfNoneMatch: with StripIfNoneMatch (and the server's
// credentials) a create-only PUT or CompleteMultipartUpload over an existing
// object overwrites it, as on a server that ignores If-None-Match; without
// the fault, the same requests through the proxy fail with 412.
func TestFaultProxyStripIfNoneMatch(t *testing.T) {
	srv, p, c := proxiedS3(t)
	ctx := context.Background()
	core := minio.Core{Client: c}
	createOnly := minio.PutObjectOptions{}
	createOnly.SetMatchETagExcept("*")
	put := func(key, data string) error {
		_, err := c.PutObject(ctx, srv.Bucket, key, strings.NewReader(data), int64(len(data)), createOnly)
		return err
	}
	complete := func(key string, data []byte) error {
		id, err := core.NewMultipartUpload(ctx, srv.Bucket, key, minio.PutObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer core.AbortMultipartUpload(ctx, srv.Bucket, key, id)
		part, err := core.PutObjectPart(ctx, srv.Bucket, key, id, 1, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = core.CompleteMultipartUpload(ctx, srv.Bucket, key, id, []minio.CompletePart{{PartNumber: 1, ETag: part.ETag, ChecksumCRC32C: part.ChecksumCRC32C}}, createOnly)
		return err
	}
	content := func(key string) string {
		t.Helper()
		o, err := c.GetObject(ctx, srv.Bucket, key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer o.Close()
		b, err := io.ReadAll(o)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	is412 := func(err error) bool { return minio.ToErrorResponse(err).StatusCode == http.StatusPreconditionFailed }

	if err := put("k", "first"); err != nil {
		t.Fatal(err)
	}
	if err := put("k", "second"); !is412(err) {
		t.Fatalf("create-only PUT over an existing object without the fault: %v, want 412", err)
	}
	// Without credentials the proxy cannot sign again: it forwards unchanged.
	p.Set(Faults{StripIfNoneMatch: true})
	if err := put("k", "second"); !is412(err) {
		t.Fatalf("create-only PUT with StripIfNoneMatch but no credentials: %v, want 412", err)
	}

	p.SetCredentials(srv.AccessKey, srv.SecretKey, srv.Region)
	big := randBytes(t, 1<<20) // several aws-chunked chunks
	for _, tc := range []struct{ name, key, data string }{
		{"small", "k", "second"},
		{"empty", "k", ""},
		{"1 MiB", "k", string(big)},
		{"odd name", "dir/a b+c~%=&.bin", "x"},
	} {
		if tc.key != "k" {
			if err := put(tc.key, "original"); err != nil {
				t.Fatal(err)
			}
		}
		if err := put(tc.key, tc.data); err != nil {
			t.Fatalf("%s: create-only PUT over an existing object with StripIfNoneMatch: %v, want success", tc.name, err)
		}
		if got := content(tc.key); got != tc.data {
			t.Fatalf("%s: object holds %d bytes, want the %d just written", tc.name, len(got), len(tc.data))
		}
	}
	part := bytes.Repeat([]byte("m"), 5<<20)
	if err := complete("k", part); err != nil {
		t.Fatalf("create-only CompleteMultipartUpload over an existing object with StripIfNoneMatch: %v, want success", err)
	}
	if got := content("k"); got != string(part) {
		t.Fatalf("after the multipart upload the object holds %d bytes, want %d", len(got), len(part))
	}
	// Four PUTs over "k" and "dir/...", the PUT that created the latter,
	// one CompleteMultipartUpload.
	if s := p.Stats(); s.Stripped != 6 {
		t.Errorf("Stripped = %d, want 6", s.Stripped)
	}
	// Requests without If-None-Match pass untouched, and the fault cleared
	// brings create-only back.
	if _, err := c.PutObject(ctx, srv.Bucket, "plain", strings.NewReader("p"), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	p.Set(Faults{})
	if err := put("k", "third"); !is412(err) {
		t.Fatalf("create-only PUT after the fault cleared: %v, want 412", err)
	}
	if s := p.Stats(); s.Stripped != 6 {
		t.Errorf("Stripped = %d after requests without the header, want 6", s.Stripped)
	}
}

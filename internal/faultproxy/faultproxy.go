package faultproxy

import (
	"bufio"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Faults says what the proxy does to requests. Shares are probabilities 0..1,
// drawn per request from a seeded PRNG. The checks run in this order: Down,
// Error503, Stall; a request that passes them is forwarded (after Latency) and
// its response may be cut (CutBody).
type Faults struct {
	// Error503 is the share of requests answered "503 Slow Down" with an S3
	// XML error body (Code SlowDown), without forwarding. The request body is
	// read first (unless the client waits for "100 Continue"), Latency is
	// added, and the connection is closed after the answer.
	Error503 float64
	// CutBody is the share of forwarded responses whose body is cut: the
	// headers (with the full Content-Length) and a random part of the body
	// (0..len-1 bytes) are sent, then the connection is closed abruptly
	// (hijack + close), so the client sees an unexpected EOF. Responses
	// without a body (HEAD, 204, 304, Content-Length 0) are not cut and not
	// counted. A body of unknown length (chunked) is cut within its first
	// 64 KiB, or just before its end when it is shorter.
	CutBody float64
	// CutGETOnly limits CutBody to the responses of GET requests (downloads
	// and listings), sparing the answers to uploads. fake-gcs-server needs
	// it: it appends every chunk of a resumable upload it receives without
	// looking at the chunk's offset, so a chunk the client resends after
	// losing the answer would be stored twice, where GCS itself keeps the
	// bytes it already has.
	CutGETOnly bool
	// Stall is the share of requests that stall: the proxy reads the request
	// (body included), sends nothing and holds the connection open until
	// StallFor passes, the client goes away or the proxy closes; then it
	// closes the connection.
	Stall float64
	// StallFor is how long a stall lasts (0 = until the client disconnects or
	// the proxy closes).
	StallFor time.Duration
	// Latency is added before forwarding every request (a real store's round
	// trip), and before answering an injected 503.
	Latency time.Duration
	// Down fails every request: the connection is closed without any
	// response.
	Down bool
	// StripIfNoneMatch removes the If-None-Match header from every forwarded
	// request, so the server behaves like one that ignores it: a PUT or a
	// CompleteMultipartUpload with "If-None-Match: *" overwrites an
	// existing object instead of failing with 412. The header is signed
	// (SigV4), so the proxy signs such requests again, with the credentials
	// given to SetCredentials (without them they are forwarded unchanged);
	// an aws-chunked body (minio-go's streaming signature over plain http)
	// is decoded and sent plain, its trailing checksum as a header. Counted
	// in Stats.Stripped.
	StripIfNoneMatch bool
	// Seed seeds the PRNG the shares are drawn from; 0 means 1.
	Seed int64
}

// Stats is a snapshot of a Proxy's counters.
type Stats struct {
	Requests      int64            // every request received
	ByMethod      map[string]int64 // requests per method (GET, PUT, HEAD, POST, DELETE, ...); methods not seen are absent. A GET that lists a bucket (S3 ListObjects: a list-type, prefix or delimiter query; Azure List Blobs: comp=list) counts as "LIST", not "GET"
	Injected503   int64            // requests answered 503 SlowDown
	Cut           int64            // responses whose body was cut
	Stalled       int64            // requests that stalled
	Dropped       int64            // requests failed by Down
	Stripped      int64            // requests forwarded without their If-None-Match (StripIfNoneMatch)
	BytesSent     int64            // response body bytes the proxy sent to clients (what a client downloaded), 503 bodies included
	BytesReceived int64            // request body bytes clients uploaded (forwarded or read and discarded)
	GetBodyBytes  int64            // response body bytes of forwarded GET requests only (bytes read from storage)
	Active        int64            // requests being handled right now; a gauge, not reset by ResetStats
}

// Proxy is an HTTP reverse proxy on 127.0.0.1 in front of a plain-http
// server (typically versitygw) that injects faults real object stores and
// flaky networks produce: 503 SlowDown, responses cut short, stalled
// requests, added latency and an unreachable endpoint. It forwards requests
// unchanged (Host header, request target, all end-to-end headers and the
// streamed body), so AWS SigV4 signatures made for Addr stay valid.
type Proxy struct {
	Addr string // host:port on 127.0.0.1 the proxy listens on (use as the S3 endpoint)

	target    string
	srv       *http.Server
	rp        *httputil.ReverseProxy
	tr        *http.Transport
	ctx       context.Context // canceled by Close; every request's context derives from it
	cancel    context.CancelFunc
	serveDone chan struct{}
	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex // guards faults, rng and creds
	faults Faults
	rng    *rand.Rand
	creds  *signingCreds // for StripIfNoneMatch

	tmu    sync.Mutex // guards conns and active
	conns  map[net.Conn]struct{}
	active int // handlers running

	requests, injected503, cut, stalled, dropped     atomic.Int64
	stripped                                         atomic.Int64
	bytesSent, bytesReceived, getBodyBytes, inFlight atomic.Int64
	byMethod                                         map[string]*atomic.Int64 // fixed keys, read-only after start
	otherMu                                          sync.Mutex
	otherMethods                                     map[string]int64
	requestID                                        atomic.Uint64
}

// closeTimeout bounds how long Close waits for connections and handlers.
const closeTimeout = 10 * time.Second

// unknownLengthCutSpan bounds where a body of unknown length is cut.
const unknownLengthCutSpan = 64 << 10

var errCut = errors.New("fault proxy: response body cut")

type connKey struct{}
type stateKey struct{}

// Start starts a proxy on a free 127.0.0.1 port forwarding to target
// (host:port, plain http). It starts without faults. The caller must Close
// it.
func Start(target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("fault proxy: target %q: %w", target, err)
	}
	// Port 0 lets the kernel pick a free port while binding, so there is no
	// window in which another process can take it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fault proxy: listen on 127.0.0.1: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		Addr:         ln.Addr().String(),
		target:       target,
		ctx:          ctx,
		cancel:       cancel,
		serveDone:    make(chan struct{}),
		conns:        make(map[net.Conn]struct{}),
		byMethod:     make(map[string]*atomic.Int64),
		otherMethods: make(map[string]int64),
	}
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodHead, http.MethodPost, http.MethodDelete, "LIST"} {
		p.byMethod[m] = new(atomic.Int64)
	}
	p.Set(Faults{})
	discard := log.New(io.Discard, "", 0)
	p.tr = &http.Transport{
		Proxy:                 nil, // never an environment proxy
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true, // no Accept-Encoding added, no transparent gunzip
		ExpectContinueTimeout: 0,    // the client's Expect header is forwarded; the body follows at once
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      p.tr,
		FlushInterval:  -1,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		ErrorLog:       discard,
	}
	p.srv = &http.Server{
		Handler:     http.HandlerFunc(p.serve),
		BaseContext: func(net.Listener) context.Context { return p.ctx },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ConnState: p.connState,
		ErrorLog:  discard,
	}
	go func() {
		defer close(p.serveDone)
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

// Set replaces the faults; it may be called at any time from any goroutine.
// Requests already being handled keep the faults they started with. It
// resets the PRNG with f.Seed.
func (p *Proxy) Set(f Faults) {
	seed := uint64(f.Seed)
	if f.Seed == 0 {
		seed = 1
	}
	p.mu.Lock()
	p.faults = f
	p.rng = rand.New(rand.NewPCG(seed, seed))
	p.mu.Unlock()
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	s := Stats{
		Requests:      p.requests.Load(),
		ByMethod:      make(map[string]int64),
		Injected503:   p.injected503.Load(),
		Cut:           p.cut.Load(),
		Stalled:       p.stalled.Load(),
		Dropped:       p.dropped.Load(),
		Stripped:      p.stripped.Load(),
		BytesSent:     p.bytesSent.Load(),
		BytesReceived: p.bytesReceived.Load(),
		GetBodyBytes:  p.getBodyBytes.Load(),
		Active:        p.inFlight.Load(),
	}
	for m, n := range p.byMethod {
		if v := n.Load(); v != 0 {
			s.ByMethod[m] = v
		}
	}
	p.otherMu.Lock()
	for m, v := range p.otherMethods {
		s.ByMethod[m] = v
	}
	p.otherMu.Unlock()
	return s
}

// ResetStats sets every counter to zero (Active, a gauge, is kept).
func (p *Proxy) ResetStats() {
	for _, c := range []*atomic.Int64{&p.requests, &p.injected503, &p.cut, &p.stalled, &p.dropped, &p.stripped,
		&p.bytesSent, &p.bytesReceived, &p.getBodyBytes} {
		c.Store(0)
	}
	for _, n := range p.byMethod {
		n.Store(0)
	}
	p.otherMu.Lock()
	clear(p.otherMethods)
	p.otherMu.Unlock()
}

// Close stops the proxy: it closes the listener and every connection
// (stalled ones included), cancels forwarded requests and waits until all
// handlers have returned, at most 10 seconds; it reports connections or
// handlers still open then. It returns quickly, and is idempotent: later
// calls return the first call's error.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.cancel()
		_ = p.srv.Close() // listener and every connection not hijacked
		<-p.serveDone
		deadline := time.Now().Add(closeTimeout)
		for {
			p.tmu.Lock()
			conns, active := len(p.conns), p.active
			p.tmu.Unlock()
			if conns == 0 && active == 0 {
				break
			}
			if time.Now().After(deadline) {
				p.closeErr = fmt.Errorf("fault proxy %s: %d connections and %d handlers still open %v after Close", p.Addr, conns, active, closeTimeout)
				break
			}
			time.Sleep(time.Millisecond)
		}
		p.tr.CloseIdleConnections()
	})
	return p.closeErr
}

func (p *Proxy) connState(c net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		p.tmu.Lock()
		p.conns[c] = struct{}{}
		p.tmu.Unlock()
	case http.StateHijacked, http.StateClosed:
		p.tmu.Lock()
		delete(p.conns, c)
		p.tmu.Unlock()
	}
}

// draw is what the PRNG decided for one request.
type draw struct {
	f                          Faults
	creds                      *signingCreds
	r503, rStall, rCut, rWhere float64
}

func (p *Proxy) draw() draw {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Always four draws, so a seed gives the same decisions for the same
	// sequence of requests whatever the shares are.
	return draw{f: p.faults, creds: p.creds, r503: p.rng.Float64(), rStall: p.rng.Float64(), rCut: p.rng.Float64(), rWhere: p.rng.Float64()}
}

// reqState carries a forwarded request's cut decision to modifyResponse and
// the response writer.
type reqState struct {
	cutArmed bool
	cutWhere float64 // 0..1: where in the body to cut
	cutAt    int64   // body bytes to send before cutting; -1 = no cut
	cutAtEnd bool    // unknown length: cut at the end when the body is shorter than cutAt
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.tmu.Lock()
	p.active++
	p.tmu.Unlock()
	defer func() {
		p.tmu.Lock()
		p.active--
		p.tmu.Unlock()
	}()
	p.inFlight.Add(1)
	defer p.inFlight.Add(-1)

	p.requests.Add(1)
	method := r.Method
	if q := r.URL.Query(); method == http.MethodGet && (q.Has("list-type") || q.Has("prefix") || q.Has("delimiter") || q.Get("comp") == "list") {
		method = "LIST"
	}
	if n, ok := p.byMethod[method]; ok {
		n.Add(1)
	} else {
		p.otherMu.Lock()
		p.otherMethods[method]++
		p.otherMu.Unlock()
	}
	if p.ctx.Err() != nil { // closing
		abort(w)
		return
	}

	body := &countingReader{r: r.Body, n: &p.bytesReceived}
	d := p.draw()
	switch {
	case d.f.Down:
		p.dropped.Add(1)
		abort(w)
		return
	case d.r503 < d.f.Error503:
		p.injected503.Add(1)
		p.slowDown(w, r, body, d.f.Latency)
		return
	case d.rStall < d.f.Stall:
		p.stalled.Add(1)
		p.stall(w, r, body, d.f.StallFor)
		return
	}
	if !sleepCtx(r.Context(), d.f.Latency) {
		abort(w)
		return
	}
	st := &reqState{cutArmed: d.rCut < d.f.CutBody && (!d.f.CutGETOnly || r.Method == http.MethodGet), cutWhere: d.rWhere, cutAt: -1}
	out := r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
	out.Body = body
	if d.f.StripIfNoneMatch && d.creds != nil && r.Header.Get("If-None-Match") != "" {
		if err := stripIfNoneMatch(out, d.creds); err != nil {
			abort(w)
			return
		}
		p.stripped.Add(1)
	}
	pw := &proxyWriter{w: w, p: p, st: st, isGet: r.Method == http.MethodGet}
	p.rp.ServeHTTP(pw, out)
	pw.finish()
}

// rewrite makes the outbound request: same request target byte for byte, same
// Host header (the client signed for the proxy's address), same end-to-end
// headers; no X-Forwarded-* headers.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = p.target
	pr.Out.Host = pr.In.Host
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery // ReverseProxy drops unparsable parameters
	// The path as the client encoded it: the signature covers it.
	if uri := pr.In.RequestURI; strings.HasPrefix(uri, "/") && !strings.HasPrefix(uri, "//") {
		path, _, _ := strings.Cut(uri, "?")
		pr.Out.URL.Opaque = path
	}
}

func (p *Proxy) modifyResponse(resp *http.Response) error {
	st, _ := resp.Request.Context().Value(stateKey{}).(*reqState)
	if st == nil || !st.cutArmed {
		return nil
	}
	if resp.Request.Method == http.MethodHead || resp.StatusCode < 200 ||
		resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified ||
		resp.ContentLength == 0 {
		return nil // no body to cut
	}
	if cl := resp.ContentLength; cl > 0 {
		st.cutAt = min(int64(st.cutWhere*float64(cl)), cl-1)
	} else {
		st.cutAt = int64(st.cutWhere * unknownLengthCutSpan)
		st.cutAtEnd = true
	}
	return nil
}

func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil { // the client went away or the proxy is closing
		abort(w)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusBadGateway)
	fmt.Fprintf(w, "fault proxy: %v\n", err)
}

// slowDown answers 503 Slow Down like S3 does, on the wire: status line,
// headers and XML body, then closes the connection.
func (p *Proxy) slowDown(w http.ResponseWriter, r *http.Request, body io.Reader, latency time.Duration) {
	// Read the body as a server that has received the request does, unless
	// the client waits for "100 Continue" before sending it.
	if !strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		if _, err := io.Copy(io.Discard, body); err != nil {
			abort(w)
			return
		}
	}
	if !sleepCtx(r.Context(), latency) {
		abort(w)
		return
	}
	var res strings.Builder
	_ = xml.EscapeText(&res, []byte(r.URL.Path))
	id := fmt.Sprintf("%016X", p.requestID.Add(1))
	xmlBody := `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
		`<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>` +
		`<Resource>` + res.String() + `</Resource><RequestId>` + id + `</RequestId><HostId>fault-proxy</HostId></Error>`
	head := "HTTP/1.1 503 Slow Down\r\n" +
		"Content-Type: application/xml\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n", len(xmlBody)) +
		"Date: " + time.Now().UTC().Format(http.TimeFormat) + "\r\n" +
		"Server: fault-proxy\r\n" +
		"X-Amz-Request-Id: " + id + "\r\n" +
		"Connection: close\r\n\r\n"
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	bw := bufio.NewWriter(conn)
	bw.WriteString(head)
	if r.Method != http.MethodHead {
		bw.WriteString(xmlBody)
		p.bytesSent.Add(int64(len(xmlBody))) // before the client can have it
	}
	if bw.Flush() != nil && r.Method != http.MethodHead {
		p.bytesSent.Add(-int64(len(xmlBody)))
	}
}

// stall reads the request body, sends nothing, and closes the connection
// when d passes (d > 0), the client goes away or the proxy closes.
func (p *Proxy) stall(w http.ResponseWriter, r *http.Request, body io.Reader, d time.Duration) {
	conn, _ := r.Context().Value(connKey{}).(net.Conn)
	drained := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, body)
		drained <- err
	}()
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	// Once the body is read, net/http watches the connection and cancels the
	// request's context when the client goes away; while it is being read, a
	// gone client ends the read. Close cancels the context too.
	bodyDone, drainDone := (<-chan error)(drained), false
wait:
	for {
		select {
		case err := <-bodyDone:
			bodyDone, drainDone = nil, true
			if err != nil {
				break wait
			}
		case <-r.Context().Done():
			break wait
		case <-timeout:
			break wait
		}
	}
	if conn != nil {
		conn.Close() // ends a body read in progress
	}
	if !drainDone {
		<-drained
	}
	abort(w)
}

// abort ends a request without a response: the connection is closed.
func abort(w http.ResponseWriter) {
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		conn.Close()
		return
	}
	panic(http.ErrAbortHandler) // net/http closes the connection, sends nothing more
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

type countingReader struct {
	r io.ReadCloser
	n *atomic.Int64
}

func (c *countingReader) Close() error { return c.r.Close() }

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// proxyWriter is the ResponseWriter the ReverseProxy writes a forwarded
// response to: it counts body bytes and cuts the body when asked to.
type proxyWriter struct {
	w     http.ResponseWriter
	p     *Proxy
	st    *reqState
	isGet bool

	mu   sync.Mutex
	sent int64 // body bytes written
	dead bool  // hijacked and closed by a cut
}

func (pw *proxyWriter) Header() http.Header { return pw.w.Header() }

func (pw *proxyWriter) WriteHeader(code int) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if pw.dead || code == http.StatusContinue {
		// net/http answers "Expect: 100-continue" itself when the body is
		// first read; the backend's own 100 would be a second one.
		return
	}
	pw.w.WriteHeader(code)
}

func (pw *proxyWriter) Write(b []byte) (int, error) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if pw.dead {
		return 0, errCut
	}
	if at := pw.st.cutAt; at >= 0 && at-pw.sent < int64(len(b)) {
		n, err := pw.write(b[:at-pw.sent])
		if err != nil {
			return n, err
		}
		pw.cutLocked()
		return n, errCut
	}
	return pw.write(b)
}

// write counts before writing, so that a client that has the bytes finds them
// counted; a short write takes the rest back.
func (pw *proxyWriter) write(b []byte) (int, error) {
	pw.count(int64(len(b)))
	n, err := pw.w.Write(b)
	pw.count(int64(n - len(b)))
	pw.sent += int64(n)
	return n, err
}

func (pw *proxyWriter) count(n int64) {
	if n == 0 {
		return
	}
	pw.p.bytesSent.Add(n)
	if pw.isGet {
		pw.p.getBodyBytes.Add(n)
	}
}

// FlushError is found by http.ResponseController, which ReverseProxy uses.
func (pw *proxyWriter) FlushError() error {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if pw.dead {
		return errCut
	}
	return http.NewResponseController(pw.w).Flush()
}

// cutLocked sends what was written (headers included) and closes the
// connection under the response.
func (pw *proxyWriter) cutLocked() {
	rc := http.NewResponseController(pw.w)
	_ = rc.Flush()
	conn, _, err := rc.Hijack()
	pw.dead = true
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	pw.p.cut.Add(1) // before the client can see the cut
	conn.Close()
}

// finish cuts a body of unknown length that ended before its cut point: the
// client misses the end of the chunked encoding.
func (pw *proxyWriter) finish() {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if !pw.dead && pw.st.cutAtEnd && pw.sent > 0 {
		pw.cutLocked()
	}
}

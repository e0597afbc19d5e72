package rclone

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// tmpPrefix starts the last element of the names Put uploads to before
// publishing. List skips them and storage.CheckName refuses object names
// using it.
const tmpPrefix = storage.TmpPrefix

// cleanupTimeout bounds the removal of a failed Put's temporary object.
const cleanupTimeout = time.Minute

// copyBufSize is the buffer Put copies the caller's reader through.
const copyBufSize = 256 << 10

// Remote is a repository on an rclone remote. It is safe for concurrent use.
type Remote struct {
	bin    string   // rclone executable
	global []string // flags before every subcommand
	env    []string // rclone's environment
	rem    remote
	root   string // rclone path of the repository root
	loc    string // Location

	caDropped bool // AWS_CA_BUNDLE removed from env (see New)

	locks nameLocks

	// rangeIgnored is set when rclone cat --offset printed a whole object
	// (a remote that ignores ranges); resumed reads then fail.
	rangeIgnored atomic.Bool

	// onExit, when set (tests), is called after every rclone process exits.
	onExit func(sub string, st *os.ProcessState)
}

var (
	_ storage.Backend     = (*Remote)(nil)
	_ storage.RangeGetter = (*Remote)(nil)
)

// New opens the repository at cfg.Remote. It runs rclone once to check that
// the root exists and is a directory (on bucket-based remotes every path of
// an existing bucket is one). A missing root is an error wrapping
// storage.ErrNotFound unless create is true; then rclone creates directories
// as Put needs them (and, on bucket-based remotes, the bucket unless the
// remote sets no_check_bucket).
func New(ctx context.Context, cfg Config, create bool) (*Remote, error) {
	rem, err := parseRemote(cfg.Remote)
	if err != nil {
		return nil, err
	}
	r := &Remote{rem: rem, root: rem.root(), loc: Scheme + ":" + rem.display()}

	bin := cfg.Binary
	if bin == "" {
		bin = "rclone"
	}
	if r.bin, err = exec.LookPath(bin); err != nil {
		return nil, fmt.Errorf("rclone repository %s: rclone executable %q not found: %w (install rclone, https://rclone.org/install/)", r.loc, bin, err)
	}
	if cfg.ConfigFile != "" {
		fi, err := os.Stat(cfg.ConfigFile)
		if err != nil {
			// Not storage.ErrNotFound: that would read as "no repository".
			return nil, fmt.Errorf("rclone repository %s: config file: %v", r.loc, err)
		}
		if fi.IsDir() {
			return nil, fmt.Errorf("rclone repository %s: config file %s is a directory", r.loc, cfg.ConfigFile)
		}
		r.global = append(r.global, "--config", cfg.ConfigFile)
	}
	r.global = append(r.global, globalFlags...)
	stall := cfg.Stall
	if stall <= 0 {
		stall = storage.DefaultStall
	}
	r.global = append(r.global, "--timeout", stall.String())
	r.env = cfg.Env
	if r.env == nil {
		r.env = os.Environ()
	}

	// The check is a replayable step: storage.Retry retries it under the
	// policy of ctx (backends.Open gives the wrapper's), else runs it once.
	statRoot := func() (lsItem, error) {
		var it lsItem
		err := storage.Retry(ctx, "open", func(ctx context.Context) error {
			var err error
			it, err = r.statPath(ctx, r.root)
			return classify(err)
		})
		return it, err
	}
	info, err := statRoot()
	if err != nil && envValue(r.env, "AWS_CA_BUNDLE") != "" &&
		strings.Contains(strings.ToLower(err.Error()), "loadcustomcabundleerror") {
		// rclone 1.60's S3 backend cannot use AWS_CA_BUNDLE at all (see the
		// package documentation); without it, it verifies TLS against the
		// system roots.
		r.env = envWithout(r.env, "AWS_CA_BUNDLE")
		r.caDropped = true
		info, err = statRoot()
	}
	switch {
	case errors.Is(err, storage.ErrNotFound) && create:
	case errors.Is(err, storage.ErrNotFound):
		return nil, fmt.Errorf("rclone repository %s: %w (check the remote and path; a snapshot creates it)", r.loc, storage.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("rclone repository %s: %w", r.loc, classify(err))
	case !info.IsDir:
		return nil, fmt.Errorf("rclone repository %s: not a directory", r.loc)
	}
	return r, nil
}

// Location returns "rclone:REMOTE:PATH" without connection-string
// parameters.
func (r *Remote) Location() string { return r.loc }

// CABundleDropped reports whether New found that rclone fails with
// AWS_CA_BUNDLE set and runs it without (see the package documentation).
func (r *Remote) CABundleDropped() bool { return r.caDropped }

// Close does nothing: no rclone process outlives an operation, except those
// of open Get readers, which their Close ends.
func (r *Remote) Close() error { return nil }

// objPath returns the rclone path of object (or directory) name.
func (r *Remote) objPath(name string) string {
	if name == "" {
		return r.root
	}
	if strings.HasSuffix(r.root, ":") || strings.HasSuffix(r.root, "/") {
		return r.root + name
	}
	return r.root + "/" + name
}

// redact replaces the root with its Location form in rclone's messages,
// which quote paths with their connection-string parameters.
func (r *Remote) redact(msg string) string {
	if r.rem.params == "" {
		return msg
	}
	return strings.ReplaceAll(msg, r.rem.name+r.rem.params, r.rem.name+",…")
}

// lsItem is one entry of rclone lsjson.
type lsItem struct {
	Path    string
	Size    int64
	ModTime time.Time
	IsDir   bool
}

// statPath describes the rclone path p. Exit codes 3 and 4 (directory or
// file not found) are storage.ErrNotFound.
func (r *Remote) statPath(ctx context.Context, p string) (lsItem, error) {
	out, err := r.output(ctx, nil, "lsjson", "--stat", "--no-mimetype", "--", p)
	if err != nil {
		if c := exitCode(err); c == exitDirNotFound || c == exitFileNotFound {
			return lsItem{}, fmt.Errorf("%w: %w", storage.ErrNotFound, err)
		}
		return lsItem{}, err
	}
	var it lsItem
	if err := json.Unmarshal(out, &it); err != nil {
		return lsItem{}, fmt.Errorf("rclone lsjson --stat: bad output %.200q: %w", out, err)
	}
	return it, nil
}

// Stat describes the object name.
func (r *Remote) Stat(ctx context.Context, name string) (storage.Info, error) {
	info, err := r.stat(ctx, name)
	if err != nil {
		return storage.Info{}, fmt.Errorf("rclone stat %q: %w", name, err)
	}
	return info, nil
}

func (r *Remote) stat(ctx context.Context, name string) (storage.Info, error) {
	if err := ctx.Err(); err != nil {
		return storage.Info{}, err
	}
	it, err := r.statPath(ctx, r.objPath(name))
	if err != nil {
		return storage.Info{}, classify(err)
	}
	if it.IsDir {
		// A directory, or on bucket-based remotes nothing at all.
		return storage.Info{}, storage.ErrNotFound
	}
	return storage.Info{Name: name, Size: it.Size, ModTime: it.ModTime}, nil
}

// Get streams the object name.
func (r *Remote) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	rc, _, err := r.GetRange(ctx, name, 0, "")
	return rc, err
}

// GetRange opens the object name at byte off (storage.RangeGetter). A
// first read (off 0, pin "") runs rclone cat only and returns pin "";
// otherwise an rclone lsjson --stat first gives the object's size and
// modification time, which make the pin, bound the bytes cat must print and
// tell a changed object (storage.ErrChanged). See the package
// documentation, "Resumed reads".
func (r *Remote) GetRange(ctx context.Context, name string, off int64, pin string) (io.ReadCloser, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("rclone get %q: %w", name, err)
	}
	if off < 0 {
		return nil, "", fmt.Errorf("rclone get %q: negative offset %d", name, off)
	}
	want := int64(-1) // bytes cat must print; -1: not known
	got := ""
	if off > 0 || pin != "" {
		if r.rangeIgnored.Load() {
			return nil, "", fmt.Errorf("rclone get %q: cannot resume at byte %d: %w", name, off, errRangeIgnored)
		}
		info, err := r.stat(ctx, name)
		if err != nil {
			return nil, "", fmt.Errorf("rclone get %q: %w", name, err)
		}
		got = statPin(info)
		switch {
		case pin != "" && got != pin:
			return nil, "", fmt.Errorf("rclone get %q: %w (size and modification time %s, was %s)", name, storage.ErrChanged, got, pin)
		case info.Size < off:
			return nil, "", fmt.Errorf("rclone get %q: %w (%d bytes, the read had reached byte %d)", name, storage.ErrChanged, info.Size, off)
		case info.Size == off:
			// Nothing to print, and rclone would not say so: cat --offset
			// at the end prints the whole object on some S3 servers
			// (versitygw answers the unsatisfiable range with all of it).
			return io.NopCloser(bytes.NewReader(nil)), got, nil
		}
		want = info.Size - off
	}
	// --files-from-raw names exactly one file relative to the root, and
	// --no-traverse makes rclone look it up directly instead of listing
	// directories. A missing file is "no files transferred", exit code 9.
	args := []string{"--no-traverse", "--error-on-no-transfer", "--files-from-raw", "-"}
	if off > 0 {
		args = append(args, "--offset", strconv.FormatInt(off, 10))
	}
	args = append(args, "--", r.root)
	p, err := r.start(ctx, startOpts{stdin: strings.NewReader(name + "\n"), pipeOut: true}, "cat", args...)
	if err != nil {
		return nil, "", fmt.Errorf("rclone get %q: %w", name, err)
	}
	br := bufio.NewReaderSize(p.stdout, 64<<10)
	if _, peekErr := br.Peek(1); peekErr != nil {
		// Nothing came: an empty object, a missing one, or a failure.
		werr := p.wait()
		switch c := exitCode(werr); {
		case werr == nil && errors.Is(peekErr, io.EOF) && want <= 0:
			return io.NopCloser(bytes.NewReader(nil)), got, nil
		case werr == nil && errors.Is(peekErr, io.EOF):
			// The object shrank or went away between the stat and cat
			// (a retry's stat tells), or rclone printed nothing.
			return nil, "", fmt.Errorf("rclone get %q: %w", name, storage.Retryable(fmt.Errorf("rclone cat printed nothing from byte %d of a %d-byte object", off, off+want)))
		case werr == nil:
			return nil, "", fmt.Errorf("rclone get %q: read: %w", name, peekErr)
		case c == exitNoTransfer || c == exitDirNotFound || c == exitFileNotFound:
			return nil, "", fmt.Errorf("rclone get %q: %w", name, storage.ErrNotFound)
		case c > 0:
			// Some remotes fail instead ("is a directory not a file",
			// "not a directory"): ask whether the object exists.
			if _, serr := r.stat(ctx, name); errors.Is(serr, storage.ErrNotFound) {
				return nil, "", fmt.Errorf("rclone get %q: %w (%v)", name, storage.ErrNotFound, werr)
			}
		}
		return nil, "", fmt.Errorf("rclone get %q: %w", name, classify(werr))
	}
	return &getReader{r: r, p: p, br: br, name: name, off: off, left: want}, got, nil
}

// statPin identifies one version of an object for a resumed read: its size
// and modification time, as lsjson reports them.
func statPin(info storage.Info) string {
	return strconv.FormatInt(info.Size, 10) + "@" + info.ModTime.UTC().Format(time.RFC3339Nano)
}

// errRangeIgnored: rclone cat --offset printed more than the object holds
// from that offset, so the remote served the object from its start.
var errRangeIgnored = errors.New("the remote ignores read offsets (rclone cat --offset printed the object from its start)")

// getReader streams rclone cat's output; at EOF it returns rclone's error,
// if any, instead of io.EOF, so that a failure mid-stream is not mistaken
// for the end of the object. Close may be called concurrently with a Read
// to abort it. When the object's size is known (a resumed read), more
// bytes than it holds from off are an error, and so are fewer.
type getReader struct {
	r    *Remote
	p    *proc
	br   *bufio.Reader
	name string
	off  int64 // where the read started
	left int64 // bytes still due; -1: not known

	closed atomic.Bool
	once   sync.Once
	err    error // final result, set once rclone has exited
}

func (g *getReader) Read(b []byte) (int, error) {
	if g.closed.Load() {
		return 0, fmt.Errorf("rclone get %q: read after Close", g.name)
	}
	if g.left == 0 {
		// All due bytes came; anything more is not this object's tail.
		if _, err := g.br.Peek(1); err == nil {
			g.r.rangeIgnored.Store(true)
			g.terminate()
			g.once.Do(func() {
				_ = g.p.wait()
				g.err = fmt.Errorf("rclone get %q from byte %d: %w", g.name, g.off, errRangeIgnored)
			})
			return 0, g.err
		}
	}
	if g.left > 0 && int64(len(b)) > g.left {
		b = b[:g.left]
	}
	n, err := g.br.Read(b)
	if g.left > 0 {
		g.left -= int64(n)
	}
	if err != nil {
		err = g.finish(err)
		if err == io.EOF && g.left > 0 {
			// rclone succeeded but printed less than the object holds.
			g.err = fmt.Errorf("rclone get %q: %w", g.name, storage.Retryable(fmt.Errorf("rclone cat ended %d bytes early", g.left)))
			return n, g.err
		}
		return n, err
	}
	return n, nil
}

// finish waits for rclone once and decides what Read returns from now on.
func (g *getReader) finish(readErr error) error {
	g.once.Do(func() {
		werr := g.p.wait()
		switch {
		case g.closed.Load():
			g.err = fmt.Errorf("rclone get %q: read after Close", g.name)
		case werr != nil:
			g.err = fmt.Errorf("rclone get %q: %w", g.name, classify(werr))
		case readErr == nil || errors.Is(readErr, io.EOF):
			g.err = io.EOF
		default:
			g.err = fmt.Errorf("rclone get %q: read: %w", g.name, readErr)
		}
	})
	return g.err
}

// terminate stops rclone.
func (g *getReader) terminate() {
	_ = g.p.stdout.Close()
	g.p.terminate()
}

// Close stops rclone if the object was not read to the end.
func (g *getReader) Close() error {
	if g.closed.Swap(true) {
		return nil
	}
	g.terminate() // rclone's next write fails; a blocked Read returns
	g.finish(nil)
	return nil
}

// List calls fn for each object whose name starts with prefix, in lexical
// order. Temporary objects of unfinished Puts are not listed.
func (r *Remote) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	if err := r.list(ctx, prefix, fn); err != nil {
		return fmt.Errorf("rclone list %q: %w", prefix, err)
	}
	return nil
}

func (r *Remote) list(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// List from the root, limited to the deepest directory that prefix
	// names completely. Listing that directory's own path instead would be
	// wrong when it is a file: rclone then lists the file itself.
	dir := ""
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		dir = prefix[:i]
		if storage.CheckName(dir) != nil {
			return nil // no object can have such a prefix ("../", "a//b", ...)
		}
	}
	args := []string{"-R", "--files-only", "--no-mimetype"}
	if dir != "" {
		args = append(args, "--include", "/"+globEscape(dir)+"/**")
	}
	args = append(args, "--", r.root)
	p, err := r.start(ctx, startOpts{pipeOut: true}, "lsjson", args...)
	if err != nil {
		return err
	}
	var infos []storage.Info
	decErr := decodeList(p.stdout, func(it lsItem) {
		if it.IsDir || !strings.HasPrefix(it.Path, prefix) || storage.HasTmpElement(it.Path) {
			return
		}
		infos = append(infos, storage.Info{Name: it.Path, Size: it.Size, ModTime: it.ModTime})
	})
	if decErr != nil {
		_ = p.stdout.Close()
		p.terminate()
	}
	if err := p.wait(); err != nil {
		if exitCode(err) == exitDirNotFound {
			return nil // the root (or the directory) does not exist: nothing stored
		}
		return classify(err)
	}
	if decErr != nil {
		return fmt.Errorf("rclone lsjson: bad output: %w", decErr)
	}
	slices.SortFunc(infos, func(a, b storage.Info) int { return strings.Compare(a.Name, b.Name) })
	for _, i := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}

// decodeList reads lsjson's JSON array item by item.
func decodeList(r io.Reader, fn func(lsItem)) error {
	dec := json.NewDecoder(r)
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil // nothing printed: rclone failed before listing
		}
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return fmt.Errorf("want a JSON array, got %v", tok)
	}
	for dec.More() {
		var it lsItem
		if err := dec.Decode(&it); err != nil {
			return err
		}
		fn(it)
	}
	if _, err := dec.Token(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// globEscape quotes the characters of rclone's filter glob syntax.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`\*?[]{}`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Remove deletes the object name.
func (r *Remote) Remove(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("rclone remove %q: %w", name, err)
	}
	err := r.run(ctx, "deletefile", "--", r.objPath(name))
	if err == nil {
		return nil
	}
	// rclone says "is a directory or doesn't exist" for a missing object,
	// a directory, and also an unreachable server: ask.
	if _, serr := r.stat(ctx, name); errors.Is(serr, storage.ErrNotFound) {
		return fmt.Errorf("rclone remove %q: %w", name, storage.ErrNotFound)
	} else if serr != nil && ctx.Err() == nil {
		return fmt.Errorf("rclone remove %q: %w", name, serr)
	}
	return fmt.Errorf("rclone remove %q: %w", name, classify(err))
}

// Put stores r under name, create-only. See the package documentation.
func (r *Remote) Put(ctx context.Context, name string, src io.Reader) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("rclone put %q: %w", name, err)
	}
	// No Stat before uploading: callers check for existing objects
	// themselves, and it would cost an rclone start on every Put. Publishing
	// refuses to replace an existing object.
	tmp := path.Join(path.Dir(name), tmpPrefix+randomHex())
	if err := r.rcat(ctx, tmp, src); err != nil {
		r.cleanupUpload(ctx, tmp)
		return fmt.Errorf("rclone put %q: %w", name, err)
	}
	if err := ctx.Err(); err != nil {
		r.cleanup(ctx, tmp)
		return fmt.Errorf("rclone put %q: %w", name, err)
	}
	if err := r.publish(context.WithoutCancel(ctx), tmp, name); err != nil {
		return fmt.Errorf("rclone put %q: %w", name, err)
	}
	return nil
}

// rcat streams src into the object tmp.
func (r *Remote) rcat(ctx context.Context, tmp string, src io.Reader) error {
	p, err := r.start(ctx, startOpts{pipeIn: true}, "rcat", "--", r.objPath(tmp))
	if err != nil {
		return err
	}
	sr := &srcReader{ctx: ctx, r: src}
	_, copyErr := io.CopyBuffer(writerOnly{p.stdin}, sr, make([]byte, copyBufSize))
	if sr.err != nil {
		// Stop rclone before it sees the end of its stdin: EOF would make it
		// store the partial stream. Wait closes stdin once it has exited.
		p.terminate()
		_ = p.wait()
		return sr.err
	}
	closeErr := p.stdin.Close()
	if err := p.wait(); err != nil {
		return classify(err) // also explains a write error: rclone exited
	}
	if copyErr != nil {
		return fmt.Errorf("rclone rcat: write: %w", copyErr)
	}
	if closeErr != nil && !errors.Is(closeErr, os.ErrClosed) {
		return fmt.Errorf("rclone rcat: %w", closeErr)
	}
	return nil
}

// publish moves tmp to name unless name exists. rclone checks the target
// right before moving; the lock makes that check and the move atomic among
// this process's Puts.
//
// The outcome comes from the statistics rclone logs at the end (-v
// --use-json-log): one rename means published, none means the target
// existed. When they are missing or rclone failed, a Stat of tmp decides:
// gone means published.
func (r *Remote) publish(ctx context.Context, tmp, name string) error {
	unlock := r.locks.lock(name)
	defer unlock()
	p, err := r.start(ctx, startOpts{}, "moveto", "--ignore-existing", "-v", "--use-json-log", "--", r.objPath(tmp), r.objPath(name))
	if err != nil {
		r.cleanup(ctx, tmp)
		return err
	}
	moveErr := p.wait()
	if renames, ok := jsonStat(p.stderr.String(), "renames"); ok && moveErr == nil {
		if renames > 0 {
			return nil
		}
		r.cleanup(ctx, tmp)
		return storage.ErrExists
	}
	_, statErr := r.stat(ctx, tmp)
	switch {
	case errors.Is(statErr, storage.ErrNotFound):
		// tmp is gone: it was renamed, or (S3) copied before being deleted.
		return nil
	case statErr != nil:
		if moveErr != nil {
			return classify(moveErr)
		}
		return fmt.Errorf("checking the outcome of publishing: %w", statErr)
	}
	// tmp is still there: rclone skipped the move because name exists, or
	// failed.
	r.cleanup(ctx, tmp)
	if moveErr != nil {
		return classify(moveErr)
	}
	return storage.ErrExists
}

// jsonStat returns the counter key of the last statistics in rclone's JSON
// log (--use-json-log), and whether there was one.
func jsonStat(log, key string) (int64, bool) {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		line := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var entry struct {
			Stats map[string]json.RawMessage `json:"stats"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil || entry.Stats == nil {
			continue
		}
		var n int64
		if raw, ok := entry.Stats[key]; ok && json.Unmarshal(raw, &n) == nil {
			return n, true
		}
		return 0, false
	}
	return 0, false
}

// cleanup removes the temporary object tmp, best effort, also when ctx is
// cancelled.
func (r *Remote) cleanup(ctx context.Context, tmp string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	_ = r.run(ctx, "deletefile", "--", r.objPath(tmp))
}

// cleanupUpload removes what a failed rcat may have left under tmp: the
// object, if rcat completed it, and on S3 a multipart upload. rclone aborts
// its multipart upload on SIGTERM, except when the signal comes while the
// upload is being created (seen with rclone 1.60 when the reader fails
// within the first MiB); "rclone backend cleanup" then aborts the uploads
// whose key starts with tmp, a unique name, so it touches no other upload.
// Remotes without that command fail it quickly; the error is ignored.
func (r *Remote) cleanupUpload(ctx context.Context, tmp string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { _ = r.run(ctx, "deletefile", "--", r.objPath(tmp)) })
	wg.Go(func() { _ = r.run(ctx, "backend", "cleanup", "-o", "max-age=0", "--", r.objPath(tmp)) })
	wg.Wait()
}

// srcReader records the error of the caller's reader (or ctx) so that Put
// can tell it from a failure to write to rclone.
type srcReader struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (s *srcReader) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		s.err = err
		return 0, err
	}
	n, err := s.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		s.err = err
	}
	return n, err
}

// writerOnly hides ReadFrom so that io.CopyBuffer uses the buffer.
type writerOnly struct{ w io.Writer }

func (w writerOnly) Write(p []byte) (int, error) { return w.w.Write(p) }

func randomHex() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// nameLocks serialises the publishing of equal names.
type nameLocks struct {
	mu sync.Mutex
	m  map[string]*nameLock
}

type nameLock struct {
	mu   sync.Mutex
	refs int
}

func (l *nameLocks) lock(name string) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*nameLock)
	}
	nl := l.m[name]
	if nl == nil {
		nl = &nameLock{}
		l.m[name] = nl
	}
	nl.refs++
	l.mu.Unlock()
	nl.mu.Lock()
	return func() {
		nl.mu.Unlock()
		l.mu.Lock()
		if nl.refs--; nl.refs == 0 {
			delete(l.m, name)
		}
		l.mu.Unlock()
	}
}

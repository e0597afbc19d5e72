package rclone

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

// Config says how to reach a repository through rclone.
type Config struct {
	// Remote is the rclone path of the repository root, as rclone takes it:
	// "remote:path", "remote:" (the remote's root), ":backend,k=v:path" or
	// "/absolute/local/path".
	Remote string
	// Binary is the rclone executable: a path, or a name looked up in $PATH.
	// "" means "rclone".
	Binary string
	// ConfigFile is passed to rclone as --config. "" leaves rclone's own
	// lookup: $RCLONE_CONFIG, then ~/.config/rclone/rclone.conf, ...
	ConfigFile string
	// Env is rclone's environment (KEY=value). Nil means os.Environ() as of
	// New.
	Env []string
	// Stall is rclone's --timeout, the IO idle timeout after which it
	// abandons a connection that moves no byte; 0 means
	// storage.DefaultStall.
	Stall time.Duration
}

// Scheme is the URL scheme of rclone repositories.
const Scheme = "rclone"

// URLForm describes the accepted URL forms, for help and error texts.
const URLForm = "rclone:REMOTE:PATH (a remote of rclone.conf), rclone::BACKEND,key=value:PATH or rclone:/absolute/path"

// ParseURL parses a repository URL "rclone:REMOTE:PATH" (see URLForm) into
// a Config whose Remote is the part after "rclone:". Errors wrap
// storage.ErrBadURL and do not quote connection-string parameters.
func ParseURL(raw string) (Config, error) {
	scheme, spec, ok := strings.Cut(raw, ":")
	if !ok || !strings.EqualFold(scheme, Scheme) {
		return Config{}, fmt.Errorf("%w: %q is not an rclone URL (want %s)", storage.ErrBadURL, redactSpec(raw), URLForm)
	}
	if _, err := parseRemote(spec); err != nil {
		return Config{}, err
	}
	return Config{Remote: spec}, nil
}

// remote is a parsed rclone path.
type remote struct {
	name   string // "s3remote", ":s3" for an on-the-fly backend, "" for a local path
	params string // connection-string parameters after the name, with their leading ','
	path   string // path on the remote, without trailing '/' (except a lone "/")
}

// root returns the rclone path of the remote's root directory.
func (r remote) root() string {
	if r.name == "" {
		return r.path
	}
	return r.name + r.params + ":" + r.path
}

// display returns the root without connection-string parameters.
func (r remote) display() string {
	if r.name == "" {
		return r.path
	}
	p := ""
	if r.params != "" {
		p = ",…"
	}
	return r.name + p + ":" + r.path
}

// nameRE matches a remote name of rclone.conf or an on-the-fly backend
// name: letters, digits, '_', '.', '+', '@', '-' and inner spaces.
var nameRE = regexp.MustCompile(`^[\p{L}\p{N}_.+@]([\p{L}\p{N}_.+@ \-]*[\p{L}\p{N}_.+@\-])?$`)

// parseRemote splits an rclone path. It accepts what rclone accepts for a
// remote, minus relative local paths: "rclone:backups" is far more likely a
// remote whose colon was forgotten than a directory of the working
// directory.
func parseRemote(spec string) (remote, error) {
	bad := func(why string) error {
		return fmt.Errorf("%w: rclone:%s: %s (want %s)", storage.ErrBadURL, redactSpec(spec), why, URLForm)
	}
	if strings.TrimSpace(spec) == "" {
		return remote{}, bad("missing remote")
	}
	if strings.HasPrefix(spec, "/") {
		return remote{path: trimSlash(spec)}, nil
	}
	if spec == ":" || strings.HasPrefix(spec, "::") || strings.HasPrefix(spec, ":,") {
		return remote{}, bad("empty backend name in :BACKEND:")
	}
	i := remoteEnd(spec)
	if i < 0 {
		return remote{}, bad(`missing ":" after the remote name (write rclone:REMOTE:PATH, or rclone:/absolute/path for a local directory)`)
	}
	head, path := spec[:i], spec[i+1:]
	onTheFly := strings.HasPrefix(head, ":")
	head = strings.TrimPrefix(head, ":")
	name, params, _ := strings.Cut(head, ",")
	if name == "" {
		if onTheFly {
			return remote{}, bad("empty backend name in :BACKEND:")
		}
		return remote{}, bad("empty remote name")
	}
	if !nameRE.MatchString(name) {
		return remote{}, bad(fmt.Sprintf("invalid remote name %q", name))
	}
	if onTheFly {
		name = ":" + name
	}
	if params != "" {
		params = "," + params
	}
	return remote{name: name, params: params, path: trimSlash(path)}, nil
}

// remoteEnd returns the index of the ':' that ends the remote part of spec
// (skipping a leading ':' of an on-the-fly remote and colons inside quoted
// connection-string values), or -1.
func remoteEnd(spec string) int {
	start := 0
	if strings.HasPrefix(spec, ":") {
		start = 1
	}
	var quote byte
	inParams := false
	for i := start; i < len(spec); i++ {
		c := spec[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == ',':
			inParams = true
		case inParams && (c == '"' || c == '\''):
			quote = c
		case c == ':':
			return i
		case c == '/' && !inParams:
			return -1 // a path, not a remote name
		}
	}
	return -1
}

func trimSlash(p string) string {
	for len(p) > 1 && strings.HasSuffix(p, "/") {
		p = strings.TrimSuffix(p, "/")
	}
	return p
}

// redactSpec hides connection-string parameters of an unparsed remote spec:
// everything from the first ',' of the remote part to the ':' that ends it
// (or to the end when there is none).
func redactSpec(s string) string {
	comma := strings.IndexByte(s, ',')
	if comma < 0 {
		return s
	}
	end := remoteEnd(s)
	switch {
	case end < 0:
		return s[:comma] + ",…"
	case end < comma:
		return s // the comma is in the path
	}
	return s[:comma] + ",…" + s[end:]
}

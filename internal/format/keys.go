package format

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"filippo.io/age"
	"filippo.io/age/agessh"
)

// Recipient is a parsed age recipient and its fingerprint.
type Recipient struct {
	age.Recipient
	Fingerprint string
}

// Fingerprint returns the first 16 hex digits of sha256 of a recipient's
// public string form (docs/format.md, field "recipients").
func Fingerprint(public string) string {
	s := sha256.Sum256([]byte(strings.TrimSpace(public)))
	return hex.EncodeToString(s[:8])
}

// ParseRecipient parses one recipient: an age public key (age1…, including
// post-quantum age1pq1…) or an SSH public key line (ssh-ed25519 …, ssh-rsa …).
func ParseRecipient(s string) (Recipient, error) {
	s = strings.TrimSpace(s)
	var (
		r   age.Recipient
		err error
	)
	switch {
	case strings.HasPrefix(s, "ssh-"):
		r, err = agessh.ParseRecipient(s)
	case strings.HasPrefix(s, "age1"):
		var rs []age.Recipient
		rs, err = age.ParseRecipients(strings.NewReader(s))
		if err == nil {
			r = rs[0]
		}
	case strings.HasPrefix(s, "AGE-SECRET-KEY-"):
		return Recipient{}, fmt.Errorf("%w: this is a secret key, not a recipient: give the public key (age-keygen -y key.txt) to the backing-up nodes", ErrKey)
	default:
		err = fmt.Errorf("unknown recipient type (want age1… or an ssh- public key)")
	}
	if err != nil {
		return Recipient{}, fmt.Errorf("%w: bad age recipient: %v", ErrKey, err)
	}
	return Recipient{Recipient: r, Fingerprint: Fingerprint(s)}, nil
}

// ReadRecipientsFile parses a recipients file: one recipient per line, '#'
// comments and blank lines ignored.
func ReadRecipientsFile(path string) ([]Recipient, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: read recipients file: %v", ErrKey, err)
	}
	var out []Recipient
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r, err := ParseRecipient(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n+1, err)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: recipients file %s holds no recipient", ErrKey, path)
	}
	return out, nil
}

// ReadIdentityFile reads age identities (AGE-SECRET-KEY-… lines, as written
// by age-keygen) or one unencrypted SSH private key from path.
func ReadIdentityFile(path string) ([]age.Identity, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: read identity file: %v", ErrKey, err)
	}
	if bytes.Contains(b, []byte("PRIVATE KEY-----")) {
		id, err := agessh.ParseIdentity(b)
		if err != nil {
			return nil, fmt.Errorf("%w: identity file %s: %v", ErrKey, path, err)
		}
		return []age.Identity{id}, nil
	}
	ids, err := age.ParseIdentities(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: identity file %s: %v", ErrKey, path, err)
	}
	return ids, nil
}

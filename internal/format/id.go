package format

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"time"
)

const idTimeLayout = "20060102T150405.000Z"

var idPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{8}$`)

// NewID returns a backup ID for a backup started at t: fixed-width UTC time
// (so lexical order is time order) and 32 random bits.
func NewID(t time.Time) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on supported platforms
	}
	return t.UTC().Format(idTimeLayout) + "-" + hex.EncodeToString(b[:])
}

// ValidID reports whether s has the form of a backup ID.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// IDTime returns the time encoded in a backup ID.
func IDTime(id string) (time.Time, error) {
	if !ValidID(id) {
		return time.Time{}, fmt.Errorf("%q is not a backup ID", id)
	}
	return time.Parse(idTimeLayout, id[:len(idTimeLayout)])
}

var clusterPattern = regexp.MustCompile(`^[a-z0-9_-][a-z0-9._-]{0,62}$`)

// ValidCluster reports whether s is an acceptable cluster name.
func ValidCluster(s string) bool { return clusterPattern.MatchString(s) }

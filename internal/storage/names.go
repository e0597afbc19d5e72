package storage

import (
	"fmt"
	"io/fs"
	"strings"
)

// TmpPrefix starts the name elements backends use for objects being
// written (the local backend's temporary files, rclone's upload names).
// Listings skip them and CheckName refuses them, so no object can collide
// with a write in progress.
const TmpPrefix = ".tmp-"

// CheckName is the one rule for object names, the same for every backend:
// a clean, relative, '/'-separated path (no empty, "." or ".." element, no
// backslash), without control characters (rclone reads names line by line)
// and without an element starting with TmpPrefix. Wrap applies it to every
// operation.
func CheckName(name string) error {
	if !fs.ValidPath(name) || name == "." || strings.Contains(name, `\`) {
		return fmt.Errorf("invalid object name %q: want a relative '/'-separated path without empty, '.' or '..' elements", name)
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("invalid object name %q: control characters are not allowed", name)
		}
	}
	for el := range strings.SplitSeq(name, "/") {
		if strings.HasPrefix(el, TmpPrefix) {
			return fmt.Errorf("invalid object name %q: elements starting with %q are reserved for objects being written", name, TmpPrefix)
		}
	}
	return nil
}

// HasTmpElement reports whether a listed name has an element starting with
// TmpPrefix (an unfinished write that List must not show).
func HasTmpElement(name string) bool {
	for el := range strings.SplitSeq(name, "/") {
		if strings.HasPrefix(el, TmpPrefix) {
			return true
		}
	}
	return false
}

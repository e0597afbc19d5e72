package storage_test

import (
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/storage"
)

func TestCheckName(t *testing.T) {
	for _, n := range []string{"", ".", "..", "/a", "a/", "a//b", "a/../b", "a/./b", `a\b`,
		"a\nb", "a\rb", "x\x00", "x\x7f", "a/.tmp-x/b", ".tmp-1"} {
		if storage.CheckName(n) == nil {
			t.Errorf("CheckName(%q) = nil, want an error", n)
		}
	}
	for _, n := range []string{"a", "a/b c/d", "x[1]", "snap/2024-01-02T03:04:05Z/m.json", "ünï", "a.tmp-", "x/y.tmp-z"} {
		if err := storage.CheckName(n); err != nil {
			t.Errorf("CheckName(%q) = %v", n, err)
		}
	}
}

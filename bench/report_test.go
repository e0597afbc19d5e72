package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestKeptSections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "B.md")
	if got := keptSections(path); got != "" {
		t.Errorf("no file: got %q", got)
	}
	faults := "<!-- faults:begin -->\nF\n<!-- faults:end -->"
	journal := "<!-- journal:begin -->\nJ\n<!-- journal:end -->"
	for _, c := range []struct{ in, want string }{
		{"# B\n\nmain\n", ""},
		{"# B\n\n" + journal + "\n", journal + "\n"},
		{"# B\n\n" + journal + "\n\n" + faults + "\n", journal + "\n\n" + faults + "\n"},
		{"# B\n\n" + faults + "\n\n" + journal + "\n", faults + "\n\n" + journal + "\n"},
		{"# B\n\n" + faults + "\n<!-- journal:begin -->\nunterminated\n", faults + "\n"},
	} {
		if err := os.WriteFile(path, []byte(c.in), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := keptSections(path); got != c.want {
			t.Errorf("keptSections of\n%q\ngot\n%q\nwant\n%q", c.in, got, c.want)
		}
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "B.md")
	check := func(want string) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != want {
			t.Fatalf("got\n%q\nwant\n%q", b, want)
		}
	}
	if err := writeSection(path, "one\n"); err != nil {
		t.Fatal(err)
	}
	check(beginMarker + "\none\n" + endMarker + "\n")
	os.WriteFile(path, []byte("# Benchmarks\n\nmain"), 0o644)
	writeSection(path, "two")
	check("# Benchmarks\n\nmain\n\n" + beginMarker + "\ntwo\n" + endMarker + "\n")
	b, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(b), endMarker+"\n", endMarker+"\n\nafter\n", 1)), 0o644)
	writeSection(path, "three\n\n")
	check("# Benchmarks\n\nmain\n\n" + beginMarker + "\nthree\n" + endMarker + "\n\nafter\n")
}

package benchkit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteSection(t *testing.T) {
	const begin, end = "<!-- x:begin -->", "<!-- x:end -->"
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
	write := func(section string) {
		t.Helper()
		if err := WriteSection(path, begin, end, section); err != nil {
			t.Fatal(err)
		}
	}
	write("one\n") // a new file
	check(begin + "\none\n" + end + "\n")
	os.WriteFile(path, []byte("# Benchmarks\n\nmain"), 0o644)
	write("two") // appended to a file without the section
	check("# Benchmarks\n\nmain\n\n" + begin + "\ntwo\n" + end + "\n")
	b, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(b), end+"\n", end+"\n\nafter\n", 1)), 0o644)
	write("three\n\n") // replaced in place, what follows kept
	check("# Benchmarks\n\nmain\n\n" + begin + "\nthree\n" + end + "\n\nafter\n")
}

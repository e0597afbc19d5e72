package main

import (
	"os"
	"path/filepath"
	"strings"
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

func TestReplayLine(t *testing.T) {
	kept := "<!-- journal:begin -->\n## Continuous journal\n\n### Replay speed\n\nrows\n<!-- journal:end -->\n"
	if got := replayLine(kept); !strings.Contains(got, "[Replay speed](#replay-speed)") {
		t.Errorf("replayLine: got %q", got)
	}
	if got := replayLine(""); !strings.Contains(got, "make bench-journal") || strings.Contains(got, "](#") {
		t.Errorf("replayLine without the journal section: got %q", got)
	}
	if got := anchor("Journal: replay (1 h)"); got != "journal-replay-1-h" {
		t.Errorf("anchor: got %q", got)
	}
}

func TestWorstVerdict(t *testing.T) {
	var w worst
	if got := w.verdict(1); !strings.Contains(got, "not measured") {
		t.Errorf("empty: got %q", got)
	}
	w.add(0.9, true, "x")
	w.add(5, false, "ignored")
	if got := w.verdict(1); !strings.HasPrefix(got, "**met**") || !strings.Contains(got, "×0.90, x") {
		t.Errorf("met: got %q", got)
	}
	w.add(1.2, true, "y")
	if got := w.verdict(1); !strings.HasPrefix(got, "**not met**") || !strings.Contains(got, "×1.20, y") {
		t.Errorf("not met: got %q", got)
	}
}

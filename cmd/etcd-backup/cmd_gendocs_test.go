package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenDocs(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("SOURCE_DATE_EPOCH", "1767225600") // 2026-01-01
	code, stdout, stderr := runSystemdCLI(t, "gen-docs", "--out", dir)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	// A page for the root and for every visible command, none for gen-docs.
	root := newRootCommand(io.Discard, io.Discard)
	want := []string{"etcd-backup.1"}
	for _, c := range root.Commands() {
		if c.IsAvailableCommand() {
			want = append(want, "etcd-backup-"+c.Name()+".1")
		}
	}
	for _, page := range want {
		b, err := os.ReadFile(filepath.Join(dir, "man", "man1", page))
		if err != nil {
			t.Errorf("no man page %s: %v", page, err)
			continue
		}
		if !strings.Contains(string(b), `.TH "ETCD-BACKUP" "1" "Jan 2026"`) || strings.Contains(string(b), "Auto generated") {
			t.Errorf("%s header:\n%.300s", page, b)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "man", "man1", "*gen-docs*")); len(m) > 0 {
		t.Errorf("the hidden gen-docs command has a man page: %v", m)
	}
	// Long texts are shown verbatim, not read as Markdown.
	b, _ := os.ReadFile(filepath.Join(dir, "man", "man1", "etcd-backup.1"))
	if !strings.Contains(string(b), "ETCD_BACKUP_<FLAG>") {
		t.Errorf("etcd-backup.1 mangles the description:\n%s", b)
	}
	for _, f := range []string{bashCompletionFile, zshCompletionFile, fishCompletionFile} {
		b, err := os.ReadFile(filepath.Join(dir, "completions", f))
		if err != nil || !strings.Contains(string(b), "etcd-backup") {
			t.Errorf("completion %s: %v\n%.200s", f, err, b)
		}
	}
	if out, err := exec.Command("bash", "-n", filepath.Join(dir, "completions", bashCompletionFile)).CombinedOutput(); err != nil {
		t.Errorf("bash -n %s: %v\n%s", bashCompletionFile, err, out)
	}

	// Hidden from --help; cobra's own 'completion' command still works.
	if _, stdout, _ := runSystemdCLI(t, "--help"); strings.Contains(stdout, "gen-docs") || !strings.Contains(stdout, "completion") {
		t.Errorf("--help:\n%s", stdout)
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		if code, stdout, stderr := runSystemdCLI(t, "completion", shell); code != 0 || !strings.Contains(stdout, "etcd-backup") {
			t.Errorf("completion %s: exit %d\n%.200s%s", shell, code, stdout, stderr)
		}
	}
	if code, _, _ := runSystemdCLI(t, "gen-docs"); code != exitUsage {
		t.Errorf("gen-docs without --out: exit %d, want %d", code, exitUsage)
	}
}

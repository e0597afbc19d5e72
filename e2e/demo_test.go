package e2e

import (
	"regexp"
	"strings"
	"testing"
)

// TestDemo runs the README's first command and checks the story it tells:
// a backup, a journal, a mistake, every member restored to just before it,
// every key back.
func TestDemo(t *testing.T) {
	out := mustCLI(t, nil, "demo", "--keys", "400").stdout
	for _, re := range []string{
		`(?m)^3\. backed up member m\d at revision \d+`,
		`(?m)^4\. journaled every change after the backup: 100 more keys up to revision (\d+), then a mistake at revision \d+ \(400 keys deleted\); [1-9]\d* journal segments$`,
		`(?m)^6\. restored all 3 members to revision \d+, just before the mistake`,
		`(?m)^7\. every one of the 500 keys is back on every member`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("demo output does not match %s:\n%s", re, out)
		}
	}
	good := regexp.MustCompile(`up to revision (\d+)`).FindStringSubmatch(out)
	if good == nil || !strings.Contains(out, "restored all 3 members to revision "+good[1]+",") {
		t.Errorf("demo did not restore to the last good revision:\n%s", out)
	}
}

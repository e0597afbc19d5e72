package benchkit

import "testing"

func TestSummarizeProfile(t *testing.T) {
	out := `File: etcd-backup
Type: cpu
Showing nodes accounting for 4s, 100% of 4s total
      flat  flat%   sum%        cum   cum%
     1.50s 37.50% 37.50%      1.50s 37.50%  crypto/internal/fips140/sha256.blockSHANI
     1000ms 25.00% 62.50%      1s 25.00%  github.com/klauspost/compress/zstd.(*fastEncoder).Encode
     0.50s 12.50% 75.00%      0.50s 12.50%  runtime.scanobject
     500ms 12.50% 87.50%      0.50s 12.50%  runtime.futex
     0.50s 12.50%   100%      0.50s 12.50%  main.other
`
	cats := []Category{{Name: "hash", Match: "sha256"}, {Name: "zstd", Match: "klauspost"}, {Name: "gc", Match: GCMatch}, {Name: "rt", Match: "runtime."}}
	byCat, top := SummarizeProfile(out, cats)
	want := map[string]float64{"hash": 1.5, "zstd": 1, "gc": 0.5, "rt": 0.5, "other": 0.5}
	if len(byCat) != len(want) {
		t.Fatalf("categories %+v, want %v", byCat, want)
	}
	for _, c := range byCat {
		if c.Seconds != want[c.Name] || c.Percent != 100*want[c.Name]/4 {
			t.Errorf("%s: %.2fs %.1f%%, want %.2fs", c.Name, c.Seconds, c.Percent, want[c.Name])
		}
	}
	if byCat[0].Name != "hash" {
		t.Errorf("largest category %q, want hash", byCat[0].Name)
	}
	if len(top) != 5 || top[0].Name != "crypto/internal/fips140/sha256.blockSHANI" || top[0].Percent != 37.5 {
		t.Errorf("top %+v", top)
	}
}

func TestProfileMarkdown(t *testing.T) {
	got := ProfileMarkdown([]Share{{Name: "zstd", Seconds: 1.5, Percent: 60}, {Name: "other", Seconds: 1, Percent: 40}},
		[]Share{{Name: "f", Seconds: 1.5, Percent: 60}, {Name: "g", Seconds: 1, Percent: 40}})
	want := "| kind | CPU, s | share |\n|---|---|---|\n| zstd | 1.50 | 60% |\n| other | 1.00 | 40% |\n\nTop functions (flat): `f` 60%, `g` 40%.\n\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

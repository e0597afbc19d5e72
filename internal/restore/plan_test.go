package restore

import (
	"errors"
	"reflect"
	"testing"
)

func TestMakePlan(t *testing.T) {
	const ic = "m1=http://10.0.0.1:2380,m2=http://10.0.0.2:2380,m3=http://10.0.0.3:2380"
	for _, tc := range []struct {
		name    string
		spec    Spec
		wantIC  string
		wantErr bool
	}{
		{"whole cluster", Spec{DataDir: "/d", Name: "m2", InitialCluster: ic}, ic, false},
		{"peer urls match", Spec{DataDir: "/d", Name: "m2", InitialCluster: ic, PeerURLs: "http://10.0.0.2:2380"}, ic, false},
		{"unsorted input is canonicalised", Spec{DataDir: "/d", Name: "m1", InitialCluster: "m3=http://10.0.0.3:2380,m1=http://10.0.0.1:2380"},
			"m1=http://10.0.0.1:2380,m3=http://10.0.0.3:2380", false},
		{"founding from peer url", Spec{DataDir: "/d", Name: "a", PeerURLs: "https://h:2380", Founding: true}, "a=https://h:2380", false},
		{"founding keeps only own entry", Spec{DataDir: "/d", Name: "m1", InitialCluster: ic, Founding: true}, "m1=http://10.0.0.1:2380", false},
		{"missing data dir", Spec{Name: "m1", InitialCluster: ic}, "", true},
		{"missing name", Spec{DataDir: "/d", InitialCluster: ic}, "", true},
		{"name not in cluster", Spec{DataDir: "/d", Name: "m9", InitialCluster: ic}, "", true},
		{"peer url mismatch", Spec{DataDir: "/d", Name: "m1", InitialCluster: ic, PeerURLs: "http://10.0.0.9:2380"}, "", true},
		{"bad peer url scheme", Spec{DataDir: "/d", Name: "a", PeerURLs: "tcp://h:2380"}, "", true},
		{"peer url without port", Spec{DataDir: "/d", Name: "a", PeerURLs: "http://h"}, "", true},
		{"bad cluster entry", Spec{DataDir: "/d", Name: "a", InitialCluster: "a:http://h:1"}, "", true},
		{"no peer url at all", Spec{DataDir: "/d", Name: "a"}, "", true},
		{"mark compacted without bump", Spec{DataDir: "/d", Name: "m1", InitialCluster: ic, MarkCompacted: true}, "", true},
		{"bump without mark compacted (etcd ignores it)", Spec{DataDir: "/d", Name: "m1", InitialCluster: ic, RevisionBump: 1000}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := MakePlan(tc.spec)
			if tc.wantErr {
				if !errors.Is(err, ErrBadSpec) {
					t.Fatalf("want ErrBadSpec, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.InitialCluster != tc.wantIC {
				t.Fatalf("initial cluster %q, want %q", p.InitialCluster, tc.wantIC)
			}
			if p.Token != DefaultToken {
				t.Fatalf("token %q", p.Token)
			}
		})
	}
}

func TestEtcdFlags(t *testing.T) {
	p, err := MakePlan(Spec{DataDir: "/var/lib/etcd", Name: "a", PeerURLs: "http://h:2380", Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--name=a", "--data-dir=/var/lib/etcd", "--initial-advertise-peer-urls=http://h:2380",
		"--initial-cluster=a=http://h:2380", "--initial-cluster-token=tok", "--initial-cluster-state=new"}
	if got := p.EtcdFlags(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v", got)
	}
}

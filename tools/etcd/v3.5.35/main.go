// Command etcd builds the etcd v3.5.35 server for the etcd-backup test suite.
//
// It mirrors upstream etcd's own main package (go.etcd.io/etcd/v3/main.go),
// which cannot be built with "go install pkg@version" because etcd's
// modules carry replace directives. Built via scripts/install-test-deps.sh.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

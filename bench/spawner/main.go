package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

const resultEnv = "ETCD_BACKUP_BENCH_SPAWN_RESULT"

type result struct {
	WallNS, UtimeNS, StimeNS, MaxRSSKiB int64
}

func main() {
	resultFile := os.Getenv(resultEnv)
	if resultFile == "" || len(os.Args) < 2 {
		fmt.Fprintf(os.Stderr, "usage: %s=FILE spawner COMMAND [ARG...]\n", resultEnv)
		os.Exit(2)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, resultEnv+"=") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The command dies with the spawner, which dies with the benchmark.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if cmd.ProcessState == nil {
		fmt.Fprintf(os.Stderr, "spawner: %v\n", err)
		os.Exit(127)
	}
	res := result{WallNS: int64(wall)}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.UtimeNS, res.StimeNS, res.MaxRSSKiB = ru.Utime.Nano(), ru.Stime.Nano(), ru.Maxrss
	}
	b, _ := json.Marshal(res)
	if werr := os.WriteFile(resultFile, b, 0o600); werr != nil {
		fmt.Fprintf(os.Stderr, "spawner: %v\n", werr)
		os.Exit(125)
	}
	if err != nil {
		if code := cmd.ProcessState.ExitCode(); code > 0 {
			os.Exit(code)
		}
		os.Exit(1)
	}
}

//go:build !linux

package replay

import "time"

// cpuTime and threadCPUTime are measured on Linux only (BenchmarkReplay
// then leaves out its CPU metrics).
func cpuTime() time.Duration { return 0 }

func threadCPUTime() time.Duration { return 0 }

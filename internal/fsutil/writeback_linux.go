package fsutil

import (
	"os"

	"golang.org/x/sys/unix"
)

func syncFileRange(f *os.File, off, n int64) error {
	return unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

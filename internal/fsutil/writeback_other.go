//go:build !linux

package fsutil

import (
	"errors"
	"os"
)

func syncFileRange(*os.File, int64, int64) error { return errors.ErrUnsupported }

//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package migrations

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// lockFile takes an exclusive flock(2) on path, creating it with the
// permissions of dbFile when missing, and waits while another process, or
// another run in this process, holds it. The kernel releases the lock when
// its holder exits, however it dies, so a run killed mid-migration never
// leaves the next one waiting. flock cannot wait and watch ctx at once, so
// the wait polls (every 50ms at most) and gives up when ctx is done.
func lockFile(ctx context.Context, path, dbFile string) (unlock func(), err error) {
	perm := fs.FileMode(0o644)
	if fi, err := os.Stat(dbFile); err == nil {
		perm = fi.Mode().Perm()
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, perm)
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		// A database in a directory this user may only read: flock works
		// on a descriptor opened for reading, if the file exists.
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	pause := time.Millisecond
	for waited := false; ; waited = true {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, &fs.PathError{Op: "flock", Path: path, Err: err}
		}
		if !waited && testHookLockWait != nil {
			testHookLockWait(path)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			_ = f.Close()
			return nil, fmt.Errorf("wait for %s: %w", path, ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
	return func() {
		// Closing the last descriptor releases the lock too; unlocking
		// first keeps the release independent of descriptor sharing.
		_ = syscall.Flock(fd, syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}

//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package migrations

import (
	"context"
	"fmt"
	"sync"
)

// heldFiles maps a lock file path to a channel with room for one token:
// the holder's.
var heldFiles sync.Map

// lockFile is the fallback where flock(2) is missing (Windows among
// others): it serializes the runs of this process only, without touching
// the file system. Processes migrating one SQLite file at the same moment
// may still collide there; start one migrating process first.
func lockFile(ctx context.Context, path, _ string) (unlock func(), err error) {
	v, _ := heldFiles.LoadOrStore(path, make(chan struct{}, 1))
	held := v.(chan struct{})
	select {
	case held <- struct{}{}:
	default:
		if testHookLockWait != nil {
			testHookLockWait(path)
		}
		select {
		case held <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %s: %w", path, ctx.Err())
		}
	}
	return func() { <-held }, nil
}

package migrations

import "sync"

// lockWaiters maps a lock file to the channel NotifyLockWait returned for
// it.
var lockWaiters sync.Map

func init() {
	// Set before any test runs, so that parallel tests never write it.
	testHookLockWait = func(path string) {
		if ch, ok := lockWaiters.LoadAndDelete(path); ok {
			close(ch.(chan struct{}))
		}
	}
}

// NotifyLockWait returns a channel that is closed when a migration run next
// finds the SQLite lock file path taken and starts waiting for it.
func NotifyLockWait(path string) <-chan struct{} {
	ch := make(chan struct{})
	lockWaiters.Store(path, ch)
	return ch
}

// LockSQLite takes the migration lock of db's SQLite file the way a
// migration run does.
var LockSQLite = lockSQLite

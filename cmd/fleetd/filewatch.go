package main

import (
	"fmt"
	"os"
	"time"
)

// fileRecheck is how often the server looks whether the files it reads
// while serving (the tokens file, the TLS files) changed: a revoked
// token or a rotated certificate takes effect within it.
const fileRecheck = time.Second

// fileWatch tells a server when to read its files again: at most once
// per fileRecheck it sums them up (fileStamp), and reports a change when
// the sum differs from the one it saw last. Its owner serializes calls.
type fileWatch struct {
	paths   []string
	checked time.Time
	stamp   string
}

// newFileWatch watches paths (empty ones are skipped), taking them as
// they are at now for the files its owner has just read.
func newFileWatch(now time.Time, paths ...string) fileWatch {
	return fileWatch{paths: paths, checked: now, stamp: fileStamp(paths...)}
}

// look reports whether the files are due to be looked at (fileRecheck
// has passed, or the clock went back), and if so, whether they differ
// from the last look.
func (w *fileWatch) look(now time.Time) (due, changed bool) {
	if now.Sub(w.checked) < fileRecheck && !now.Before(w.checked) {
		return false, false
	}
	w.checked = now
	stamp := fileStamp(w.paths...)
	if stamp == w.stamp {
		return true, false
	}
	w.stamp = stamp
	return true, true
}

// fileStamp sums up the files as they are now, by size and modification
// time; a file that cannot be looked at stamps its error, so that its
// return is a change too.
func fileStamp(paths ...string) string {
	var s string
	for _, path := range paths {
		if path == "" {
			continue
		}
		fi, err := os.Stat(path)
		if err != nil {
			s += err.Error() + ";"
			continue
		}
		s += fmt.Sprintf("%s %d %d;", path, fi.Size(), fi.ModTime().UnixNano())
	}
	return s
}

// Package dbtime writes and reads canonlog's timestamps for the internal
// packages that still use its names. The logic lives in package eventlog
// (FormatTime, NormalizeTime, ScanTime), which projections outside this
// module can import; these forward to it. New code uses eventlog's names.
package dbtime

import (
	"time"

	"github.com/canonlog/canonlog/eventlog"
)

// Format is eventlog.FormatTime.
func Format(t time.Time) string { return eventlog.FormatTime(t) }

// Normalize is eventlog.NormalizeTime.
func Normalize(t time.Time) time.Time { return eventlog.NormalizeTime(t) }

// Dest scans a timestamp as eventlog.ScanTime does.
type Dest struct{ T *time.Time }

// Scan implements sql.Scanner.
func (d Dest) Scan(src any) error { return eventlog.ScanTime(d.T).Scan(src) }

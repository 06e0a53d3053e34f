// Package dbtime writes and reads canonlog's timestamps the same way on both
// backends: written as fixed-width UTC text with microseconds (PostgreSQL
// parses it into timestamptz; on SQLite text order is then time order),
// read back from either driver's representation.
package dbtime

import (
	"fmt"
	"time"
)

// Layout is how timestamps are written to the database.
const Layout = "2006-01-02T15:04:05.000000Z"

// Format renders t for the database.
func Format(t time.Time) string { return t.UTC().Format(Layout) }

// Normalize truncates t to the microsecond and moves it to UTC: exactly what
// the database stores.
func Normalize(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// Dest scans a timestamp as either driver returns it: time.Time from
// PostgreSQL, text from SQLite.
type Dest struct{ T *time.Time }

// Scan implements sql.Scanner.
func (d Dest) Scan(src any) error {
	switch v := src.(type) {
	case time.Time:
		*d.T = v.UTC()
		return nil
	case string:
		return d.parse(v)
	case []byte:
		return d.parse(string(v))
	default:
		return fmt.Errorf("cannot scan %T into a timestamp", src)
	}
}

func (d Dest) parse(s string) error {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("stored timestamp %q: %w", s, err)
	}
	*d.T = t.UTC()
	return nil
}

package eventlog

import (
	"database/sql"
	"fmt"
	"time"
)

// canonlog stores every timestamp the same way on both backends, and
// projections that keep times (probe_failures' observed_at) do too:
// TIMESTAMPTZ on PostgreSQL, which parses FormatTime's text; fixed-width
// UTC text on SQLite, whose text order is then time order.
//
// These are functions over time.Time rather than a Time type implementing
// driver.Valuer and sql.Scanner: the text form is needed where a Valuer is
// never consulted (an element of a PostgreSQL array bound to unnest, a COPY
// row), and scanning through ScanTime leaves the caller's rows with plain
// time.Time fields instead of a wrapper to unwrap.

// timeLayout is how timestamps are written to the database.
const timeLayout = "2006-01-02T15:04:05.000000Z"

// FormatTime renders t as canonlog stores timestamps on both backends: UTC
// text with exactly six fractional digits, "2006-01-02T15:04:05.000000Z".
// Finer precision is truncated. Pass it wherever the timestamp goes into
// SQL: a parameter, an array element, a COPY value.
func FormatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// NormalizeTime returns t as the database stores and returns it: moved to
// UTC and truncated to the microsecond.
func NormalizeTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// ScanTime returns a destination for Scan that reads a timestamp column
// written with FormatTime into *dst, in UTC, from either backend:
//
//	var at time.Time
//	err := row.Scan(&id, eventlog.ScanTime(&at))
//
// A NULL is an error: select COALESCE(col, …) for a nullable column, or
// scan it into a sql.NullString and parse that.
func ScanTime(dst *time.Time) sql.Scanner { return timeDest{dst} }

// timeDest is ScanTime's scanner.
type timeDest struct{ t *time.Time }

func (d timeDest) Scan(src any) error {
	var s string
	switch v := src.(type) {
	case time.Time:
		*d.t = v.UTC()
		return nil
	case string:
		s = v
	case []byte:
		s = string(v)
	default:
		return fmt.Errorf("eventlog: cannot scan %T into a timestamp", src)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("eventlog: stored timestamp %q: %w", s, err)
	}
	*d.t = t.UTC()
	return nil
}

package eventlog

import (
	"fmt"
	"time"
)

// rowScanner is what *sql.Rows, *sqlx.Rows and *sqlx.Row have in common.
type rowScanner interface {
	Scan(dest ...any) error
}

// scanEvent reads one row selected with eventColumns.
func scanEvent(r rowScanner, ev *Event) error {
	var payload []byte
	err := r.Scan(&ev.Seq, tsDest{&ev.TS}, (*string)(&ev.Kind), nullString{&ev.HostID},
		nullString{&ev.RolloutID}, &payload, nullString{&ev.EventID})
	ev.Payload = payload
	return err
}

// tsDest scans a timestamp as either driver returns it: time.Time from
// PostgreSQL, canonlog's fixed-width text from SQLite.
type tsDest struct{ t *time.Time }

func (d tsDest) Scan(src any) error {
	switch v := src.(type) {
	case time.Time:
		*d.t = v.UTC()
		return nil
	case string:
		return d.parse(v)
	case []byte:
		return d.parse(string(v))
	default:
		return fmt.Errorf("eventlog: cannot scan %T into a timestamp", src)
	}
}

func (d tsDest) parse(s string) error {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("eventlog: stored timestamp %q: %w", s, err)
	}
	*d.t = t.UTC()
	return nil
}

// nullString scans a nullable text column, NULL becoming "".
type nullString struct{ s *string }

func (d nullString) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*d.s = ""
	case string:
		*d.s = v
	case []byte:
		*d.s = string(v)
	default:
		return fmt.Errorf("eventlog: cannot scan %T into a string", src)
	}
	return nil
}

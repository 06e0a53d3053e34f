package eventlog

import (
	"fmt"
)

// rowScanner is what *sql.Rows, *sqlx.Rows and *sqlx.Row have in common.
type rowScanner interface {
	Scan(dest ...any) error
}

// scanEvent reads one row selected with eventColumns.
func scanEvent(r rowScanner, ev *Event) error {
	var payload []byte
	err := r.Scan(&ev.Seq, timeDest{&ev.TS}, (*string)(&ev.Kind), nullString{&ev.HostID},
		nullString{&ev.RolloutID}, &payload, nullString{&ev.EventID})
	ev.Payload = payload
	return err
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

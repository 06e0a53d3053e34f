// Package entryjson reads one log entry written as a JSON object: a line
// of `canonlog append --file` input, the body of fleetd's
// POST /v1/agent-events. Both inputs decode through it, so they accept and
// refuse the same things. Object and String give other JSON objects that
// become events (fleetd's gate decisions) the same checks of keys and
// text.
//
// It refuses what cannot be stored as given, where encoding/json would
// substitute silently:
//
//   - keys match exactly (encoding/json matches them case-insensitively),
//     each at most once (encoding/json keeps the last), and must be among
//     the format's fields;
//   - text fields are JSON strings whose raw bytes are valid UTF-8 and hold
//     no lone surrogate escape such as \ud800 (encoding/json stores U+FFFD
//     for either); null is not a string: leave the field out instead;
//   - an explicit ts is an RFC 3339 time that is not the zero time, which
//     eventlog reads as "no ts" and replaces with its clock's now;
//   - a payload is required, and kept byte for byte: any JSON value,
//     null included, whose own checks (valid UTF-8, no NUL, size, depth)
//     are eventlog's. Escapes inside it are the payload's own business:
//     a lone surrogate escape in a payload is stored as written.
//
// What a field means beyond that — which are required, what a kind may be,
// how long an id — is the caller's and eventlog's to check:
//
//	var lineFormat = entryjson.MustFormat(entryjson.Kind, entryjson.TS, entryjson.Payload)
//
//	entry, err := lineFormat.Decode(line)
//	var fe *entryjson.Error
//	if errors.As(err, &fe) {
//		// fe.Field names the field at fault ("" for the object as a whole)
//	}
//	err = entry.Validate(eventlog.DefaultMaxPayloadBytes)
package entryjson

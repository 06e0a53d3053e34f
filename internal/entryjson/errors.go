package entryjson

import "errors"

// Sentinel errors, returned by Format.Decode inside an *Error. Test for
// them with errors.Is.
var (
	// ErrSyntax: the input is not one valid JSON value (or is empty).
	ErrSyntax = errors.New("not valid JSON")

	// ErrNotObject: the input is a JSON value other than an object.
	ErrNotObject = errors.New("not a JSON object")

	// ErrTrailingData: more follows the object.
	ErrTrailingData = errors.New("more than one JSON value")

	// ErrUnknownField: a key is not one of the format's fields, spelled
	// exactly (keys are case-sensitive).
	ErrUnknownField = errors.New("unknown field")

	// ErrDuplicateField: a key appears twice, or both payload and
	// payload_text are given.
	ErrDuplicateField = errors.New("field given twice")

	// ErrWrongType: a text field's value is not a JSON string.
	ErrWrongType = errors.New("wrong type")

	// ErrNotStorable: a key or text field's string is not valid UTF-8 or
	// holds a lone surrogate escape: decoding it would substitute U+FFFD.
	ErrNotStorable = errors.New("cannot be stored as given")

	// ErrInvalidTS: ts is not an RFC 3339 time, or is the zero time.
	ErrInvalidTS = errors.New("invalid ts")

	// ErrRequired: a required field is missing (Decode requires the
	// payload; callers use it for the fields they require).
	ErrRequired = errors.New("required field missing")
)

// Error is a refused input: which field, why (one of the sentinels above),
// and a one-line message that names the field and says what to do.
type Error struct {
	Field  string // the field at fault; "" when it is the input as a whole
	Err    error  // one of the sentinels above
	Reason string // the message
}

func (e *Error) Error() string { return e.Reason }

func (e *Error) Unwrap() error { return e.Err }

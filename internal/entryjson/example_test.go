package entryjson_test

import (
	"errors"
	"fmt"

	"github.com/canonlog/canonlog/internal/entryjson"
)

func ExampleFormat_Decode() {
	format := entryjson.MustFormat(entryjson.Kind, entryjson.HostID, entryjson.Payload)

	e, err := format.Decode([]byte(`{"kind":"effect","host_id":"h\u00e9","payload": {"b":1, "a":"\ud800"} }`))
	fmt.Printf("%s %s %s %v\n", e.Kind, e.HostID, e.Payload, err)

	for _, in := range []string{
		`{"kind":"effect","host_id":"h\ud800","payload":{}}`,
		`{"kind":"effect","HOST_ID":"h","payload":{}}`,
	} {
		_, err = format.Decode([]byte(in))
		var fe *entryjson.Error
		errors.As(err, &fe)
		fmt.Printf("%q: %v\n", fe.Field, err)
	}
	// Output:
	// effect hé {"b":1, "a":"\ud800"} <nil>
	// "host_id": field "host_id" holds the lone surrogate escape \ud800 at byte 30: it cannot be stored as given
	// "": unknown field "HOST_ID": field names are case-sensitive (did you mean "host_id"?)
}

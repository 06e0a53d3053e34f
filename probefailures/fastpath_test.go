package probefailures

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
)

// pr returns a probe result failing in enforce mode with the given fields
// after type, mode and status.
func pr(rest string) string {
	return `{"type":"ProbeResult","mode":"enforce","status":"fail",` + rest + `}`
}

const failC1 = `"sub_results":[{"control_id":"C1","framework":"cis","status":"fail"}]`

// fastPathCases are payloads at the edges of what the fast path answers,
// with the answer Rows must give: rows rows, or an error naming errField.
// fast says whether the fast path answers; when it does not, the answer
// is the slow path's.
var fastPathCases = []struct {
	name     string
	payload  string
	fast     bool
	rows     int
	errField string
}{
	// Answered by the fast path.
	{"Plain", pr(`"probe_name":"p",` + failC1), true, 1, ""},
	{"WhitespaceEverywhere", " \t\r\n{ \"type\" :\t\"ProbeResult\" ,\n\"mode\" : \"enforce\" , \"status\":\"fail\" , \"probe_name\" : \"p\" ,\r\n" +
		"\"sub_results\" : [ { \"control_id\" : \"C1\" , \"framework\" : \"cis\" , \"status\" : \"fail\" } , null , { } ] } \n", true, 1, ""},
	{"EscapesInValues", pr(`"probe_name":"a\"b\\c\/d\b\f\n\r\t",` +
		`"sub_results":[{"control_id":"C\u00e9\u2014","framework":"\ud83d\ude00","status":"fail"}]`), true, 1, ""},
	{"LoneSurrogates", pr(`"probe_name":"\ud800",` +
		`"sub_results":[{"control_id":"\udc00x","framework":"\ud800\u0041","status":"fail"},{"control_id":"\ud800\ud800\udc00","framework":"\udbff","status":"fail"}]`), true, 2, ""},
	{"EscapedKnownValues", `{"type":"Probe\u0052esult","mode":"\u0065nforce","status":"f\u0061il","probe_name":"p",` +
		`"sub_results":[{"control_id":"C1","framework":"cis","status":"fai\u006c"}]}`, true, 1, ""},
	{"EscapedTypeOfAnotherEvent", `{"type":"Heart\u0062eat","mode":7}`, true, 0, ""},
	{"InvalidUTF8InValues", pr("\"probe_name\":\"p\xff\",\"sub_results\":[{\"control_id\":\"\xc3(\xed\xa0\x80\",\"framework\":\"\xf0\x9f\x98\",\"status\":\"fail\"}]"), true, 1, ""},
	{"ValidUTF8InValues", pr(`"probe_name":"härtung",` + `"sub_results":[{"control_id":"Ω-1","framework":"ſ","status":"fail"}]`), true, 1, ""},
	{"NestedValuesSkipped", pr(`"extra":{"a":[1,-2.5e+10,{"b":null,"c":[true,false,[]]}],"d":"x"},"probe_name":"p","n":0,` +
		`"sub_results":[{"control_id":"C1","x":{"status":"pass"},"framework":"cis","status":"fail","y":[{}]}]`), true, 1, ""},
	{"UnknownKeysLikeKnown", pr(`"types":"x","probename":"y","probe_name":"p","sub_result":7,` +
		`"sub_results":[{"control":"z","control_id":"C1","framework":"cis","frameworks":1,"status":"fail","statuses":0}]`), true, 1, ""},
	{"NullFields", `{"type":"ProbeResult","mode":null,"status":null,"probe_name":"p","observed_at":null,"sub_results":null}`, true, 0, ""},
	{"NullSubResults", pr(`"probe_name":"p","sub_results":null`), true, 0, ""},
	{"EmptySubResults", pr(`"probe_name":"p","sub_results":[]`), true, 0, ""},
	{"NullAndEmptySubResult", pr(`"probe_name":"p","sub_results":[null,{},{"status":null},{"status":"pass","control_id":7}]`), true, 0, ""},
	{"ObserveModeStillValidated", `{"type":"ProbeResult","mode":"observe","status":"fail","probe_name":"p",` + failC1 + `}`, true, 0, ""},
	{"DuplicateFailingControl", pr(`"probe_name":"p","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"},` +
		`{"control_id":"C\u0031","framework":"cis","status":"fail"},{"control_id":"C1","framework":"nist","status":"fail"}]`), true, 2, ""},
	{"ManyFailing", pr(`"probe_name":"p","sub_results":[` + manySubs(20) + `]`), true, 10, ""},
	{"ObservedAtOffsetAndNanos", pr(`"probe_name":"p","observed_at":"2026-05-16T01:00:00.1234567891-07:30",` + failC1), true, 1, ""},
	{"ObservedAtLeapDay", pr(`"probe_name":"p","observed_at":"2024-02-29T23:59:59Z",` + failC1), true, 1, ""},
	{"ObservedAtCommaFraction", pr(`"probe_name":"p","observed_at":"2026-05-16T01:00:00,5Z",` + failC1), true, 1, ""}, // time.Parse takes it
	{"ObservedAtEscaped", pr(`"probe_name":"p","observed_at":"2026-05-16T01:00:00\u002e5Z",` + failC1), true, 1, ""},
	{"TypeNotAString", `{"type":["ProbeResult"],"probe_name":""}`, true, 0, ""},
	{"NoType", `{"probe_name":"","sub_results":"ProbeResult"}`, true, 0, ""},
	{"OtherTypeAnySubResults", `{"type":"Other","probe_name":"ProbeResult","sub_results":[{"Status":"fail"},7]}`, true, 0, ""},
	{"ObjectAlone", `{}`, true, 0, ""},

	// Sent to the slow path: keys encoding/json may match otherwise.
	{"CaseVariantTopKey", `{"Type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"p",` + failC1 + `}`, false, 1, ""},
	{"CaseVariantOtherEvent", `{"TYPE":"Heartbeat","marker":"ProbeResult"}`, false, 0, ""},
	{"CaseVariantSubKey", pr(`"probe_name":"p","sub_results":[{"Control_ID":"C1","FRAMEWORK":"cis","Status":"fail"}]`), false, 1, ""},
	{"FoldedLongS", pr("\"probe_name\":\"p\",\"sub_results\":[{\"control_id\":\"C1\",\"framework\":\"cis\",\"\u017ftatus\":\"fail\"}]"), false, 1, ""},
	{"FoldedKelvin", pr("\"probe_name\":\"p\",\"sub_results\":[{\"control_id\":\"C1\",\"framewor\u212a\":\"cis\",\"status\":\"fail\"}]"), false, 1, ""},
	{"EscapedKey", `{"typ\u0065":"ProbeResult","probe_name":""}`, false, 0, "probe_name"},
	{"NonASCIIUnknownKey", pr(`"probe_name":"p","größe":1,` + failC1), false, 1, ""},
	{"InvalidUTF8Key", pr("\"probe_name\":\"p\",\"\xff\":1," + failC1), false, 1, ""},
	{"DuplicateType", `{"type":"ProbeResult","type":"Other","probe_name":""}`, false, 0, ""},
	{"DuplicateTypeLastWins", `{"type":"Other","type":"ProbeResult","probe_name":""}`, false, 0, "probe_name"},
	{"DuplicateSubStatus", pr(`"probe_name":"p","sub_results":[{"control_id":"C1","framework":"cis","status":"fail","status":"pass"}]`), false, 0, ""},
	{"DuplicateSubControl", pr(`"probe_name":"p","sub_results":[{"control_id":"C1","framework":"cis","status":"fail","control_id":""}]`), false, 0, "sub_results[0].control_id"},

	// Sent to the slow path: malformed probe results.
	{"ModeNumber", `{"type":"ProbeResult","mode":1,"probe_name":"p"}`, false, 0, "mode"},
	{"StatusBool", `{"type":"ProbeResult","status":true,"probe_name":"p"}`, false, 0, "status"},
	{"ProbeNameNull", `{"type":"ProbeResult","probe_name":null}`, false, 0, "probe_name"},
	{"ProbeNameNumber", `{"type":"ProbeResult","probe_name":7}`, false, 0, "probe_name"},
	{"ProbeNameEmpty", `{"type":"ProbeResult","probe_name":""}`, false, 0, "probe_name"},
	{"ProbeNameMissing", `{"type":"ProbeResult"}`, false, 0, "probe_name"},
	{"ObservedAtNumber", pr(`"probe_name":"p","observed_at":1`), false, 0, "observed_at"},
	{"ObservedAtNotRFC3339", pr(`"probe_name":"p","observed_at":"2026-02-29T00:00:00Z"`), false, 0, "observed_at"},
	{"SubResultsObject", pr(`"probe_name":"p","sub_results":{"control_id":"C1"}`), false, 0, "sub_results"},
	{"SubResultNotObject", pr(`"probe_name":"p","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"},"C2"]`), false, 0, "sub_results"},
	{"SubStatusNumber", pr(`"probe_name":"p","sub_results":[{"status":0}]`), false, 0, "sub_results[0].status"},
	{"FailingControlEmpty", pr(`"probe_name":"p","sub_results":[{"control_id":"","framework":"cis","status":"fail"}]`), false, 0, "sub_results[0].control_id"},
	{"FailingFrameworkNull", pr(`"probe_name":"p","sub_results":[{"control_id":"C","framework":null,"status":"fail"}]`), false, 0, "sub_results[0].framework"},

	// Sent to the slow path: not valid JSON, or not an object.
	{"TrailingGarbage", pr(`"probe_name":"p",`+failC1) + `x`, false, 0, ""},
	{"TrailingObject", pr(`"probe_name":"p",`+failC1) + `{}`, false, 0, ""},
	{"TrailingComma", pr(`"probe_name":"p",` + failC1 + `,`), false, 0, ""},
	{"LeadingZero", pr(`"probe_name":"p","n":01,` + failC1), false, 0, ""},
	{"BadNumber", pr(`"probe_name":"p","n":1.e5,` + failC1), false, 0, ""},
	{"BadEscape", pr(`"probe_name":"p\x",` + failC1), false, 0, ""},
	{"SingleQuoteEscape", pr(`"probe_name":"p\'",` + failC1), false, 0, ""},
	{"ShortUnicodeEscape", pr(`"probe_name":"p\u12",` + failC1), false, 0, ""},
	{"RawControlCharacter", pr("\"probe_name\":\"p\tq\"," + failC1), false, 0, ""},
	{"Unterminated", pr(`"probe_name":"p",` + failC1)[:40], false, 0, ""},
	{"BadLiteral", pr(`"probe_name":"p","x":nul,` + failC1), false, 0, ""},
	{"NotAnObject", `["ProbeResult"]`, false, 0, ""},
	{"Null", `null`, false, 0, ""},
	{"TooDeep", pr(`"probe_name":"p","x":` + strings.Repeat(`[`, 1000) + strings.Repeat(`]`, 1000) + `,` + failC1), false, 1, ""},
}

func manySubs(n int) string {
	subs := make([]string, n)
	for i := range subs {
		subs[i] = fmt.Sprintf(`{"control_id":"C%d","framework":"cis","status":"fail"}`, i%10)
	}
	return strings.Join(subs, ",")
}

// fastPathSeeds seed FuzzRows with the cases.
var fastPathSeeds = func() []string {
	var out []string
	for _, tc := range fastPathCases {
		out = append(out, tc.payload)
	}
	return out
}()

// TestRowsFast: the fast path answers what it is certain of, and gives
// the slow path's answer; the rest goes to the slow path.
func TestRowsFast(t *testing.T) {
	t.Parallel()
	ts := time.Date(2026, 5, 16, 1, 0, 0, 0, time.UTC)
	for _, tc := range fastPathCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ev := eventlog.Event{Seq: 9, Kind: eventlog.KindAgentEvent, TS: ts, HostID: "h", RolloutID: "r", Payload: []byte(tc.payload)}
			rows, err := Rows(nil, ev)
			if tc.errField != "" {
				var ve *ValidationError
				require.True(t, errors.As(err, &ve), "want an error naming %s, got %v", tc.errField, err)
				require.Equal(t, tc.errField, ve.Field)
			} else {
				require.NoError(t, err)
			}
			require.Len(t, rows, tc.rows)

			slow, slowErr := rowsSlow(nil, ev)
			require.Equal(t, fmt.Sprint(slowErr), fmt.Sprint(err))
			require.Equal(t, slow, rows)
			fast, ok := rowsFast(nil, ev)
			require.Equal(t, tc.fast, ok, "does the fast path answer?")
			if ok {
				require.True(t, reflect.DeepEqual(slow, fast), "fast %#v, slow %#v", fast, slow)
				require.True(t, json.Valid(ev.Payload))
			}
		})
	}
	t.Run("NoHost", func(t *testing.T) {
		t.Parallel()
		ev := eventlog.Event{Kind: eventlog.KindAgentEvent, Payload: []byte(pr(`"probe_name":"p"`))}
		_, ok := rowsFast(nil, ev)
		require.False(t, ok)
		_, err := Rows(nil, ev)
		var ve *ValidationError
		require.ErrorAs(t, err, &ve)
		require.Equal(t, "host_id", ve.Field)
	})
}

// TestRowsFastDecodes: strings come out as encoding/json decodes them.
func TestRowsFastDecodes(t *testing.T) {
	t.Parallel()
	ev := eventlog.Event{Seq: 1, Kind: eventlog.KindAgentEvent, HostID: "h", Payload: []byte(pr(
		`"probe_name":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00\ud800\u0041",` +
			`"observed_at":"2026-05-16T03:04:05.1234567+02:00",` +
			"\"sub_results\":[{\"control_id\":\"x\xffy\",\"framework\":\"\\udc00\",\"status\":\"fail\"}]"))}
	rows, ok := rowsFast(nil, ev)
	require.True(t, ok)
	require.Equal(t, []Row{{Seq: 1, HostID: "h", ProbeName: "a\"b\\c/d\b\f\n\r\té😀\uFFFDA", ControlID: "x\uFFFDy", Framework: "\uFFFD",
		ObservedAt: time.Date(2026, 5, 16, 1, 4, 5, 123456000, time.UTC)}}, rows)
}

// TestRowsAllocations: a probe result that derives no row allocates
// nothing; one that does allocates its rows' strings once.
func TestRowsAllocations(t *testing.T) {
	ev := eventlog.Event{Seq: 1, Kind: eventlog.KindAgentEvent, HostID: "h", Payload: []byte(
		`{"type":"ProbeResult","mode":"enforce","status":"pass","probe_name":"p","observed_at":"2026-05-16T01:00:00.5+02:00",` +
			`"sub_results":[{"control_id":"C\u0031","framework":"cis","status":"pass"}],"detail":"a \"quoted\" \u00e9"}`)}
	dst := make([]Row, 0, 8)
	require.Zero(t, testing.AllocsPerRun(100, func() { dst, _ = Rows(dst[:0], ev) }))
	ev.Payload = []byte(pr(`"probe_name":"p","sub_results":[{"control_id":"C\u0031","framework":"cis","status":"fail"},` +
		`{"control_id":"C2","framework":"cis","status":"fail"}]`))
	require.Equal(t, 1.0, testing.AllocsPerRun(100, func() { dst, _ = Rows(dst[:0], ev) }))
	require.Len(t, dst, 2)
}

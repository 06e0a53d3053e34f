package eventlogtest_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/eventlogtest"
)

func TestNewLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := eventlogtest.NewLog(t, nil)
	a, err := log.Append(ctx, eventlog.Entry{Kind: "k", Payload: json.RawMessage(`{}`)})
	require.NoError(t, err)
	b, err := log.Append(ctx, eventlog.Entry{Kind: "k", Payload: json.RawMessage(`{}`)})
	require.NoError(t, err)
	require.Equal(t, eventlogtest.Epoch, a.Event.TS)
	require.Equal(t, eventlogtest.Epoch.Add(time.Millisecond), b.Event.TS)

	// Each log is private to its test.
	other := eventlogtest.NewLog(t, nil)
	last, err := other.LastSeq(ctx)
	require.NoError(t, err)
	require.Zero(t, last)
}

package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/natstest"
	"github.com/canonlog/canonlog/natsforward"
)

// TestForwardToNATS: fleetd configured with a NATS server forwards the
// events agents post to the stream, and stops the forwarder with the app.
func TestForwardToNATS(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		_, js := natstest.Connect(t, natstest.Server(t))
		stream := natstest.Stream(t, js, "FLEET", "fleet.>")
		b := dbtest.New(t, backend)
		var srv *server
		cfg := Config{Addr: "127.0.0.1:0", Canonlog: app.Config{DatabaseURL: b.URL},
			NATS:   NATSConfig{URL: js.Conn().ConnectedUrl(), Stream: "FLEET", Subject: "fleet.{kind}.{rollout}.{host}"},
			Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
		a := fxtest.New(t, Options(cfg), fx.Populate(&srv))
		a.RequireStart()
		t.Cleanup(a.RequireStop)

		hc := &http.Client{}
		defer hc.CloseIdleConnections()
		resp, err := hc.Post("http://"+srv.Addr()+"/v1/agent-events", "application/json", strings.NewReader(probeBody("web-1.example.com", "r-1", "e-1", "CIS-1")))
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusCreated, resp.StatusCode)

		var msgs []natstest.Message
		require.Eventually(t, func() bool {
			info, err := stream.Info(context.Background())
			return err == nil && info.State.Msgs == 1
		}, 30*time.Second, 10*time.Millisecond)
		msgs = natstest.Messages(t, stream)
		require.Len(t, msgs, 1)
		require.Equal(t, "fleet.agent_event.r-1.web-1%2Eexample%2Ecom", msgs[0].Subject)
		require.Equal(t, "1", msgs[0].Header.Get(natsforward.HeaderSeq))
		require.Equal(t, "web-1.example.com/e-1", msgs[0].Header.Get(natsforward.HeaderEventID), "the id in its host's namespace")
		require.True(t, bytes.Contains(msgs[0].Data, []byte(`"probe_name":"ssh-hardening"`)), "%s", msgs[0].Data)
		a.RequireStop()
	})
}

// TestForwardRefused: a forwarder that cannot run stops fleetd: at start
// for a configuration it refuses, once started for a stream that does not
// exist.
func TestForwardRefused(t *testing.T) {
	t.Parallel()
	natsURL := natstest.Server(t)
	logger := slog.New(slog.DiscardHandler)

	cfg := Config{Addr: "127.0.0.1:0", Canonlog: app.Config{DatabaseURL: "sqlite::memory:"},
		NATS: NATSConfig{URL: natsURL, Stream: "FLEET", Subject: "fleet.*"}, Logger: logger}
	err := fx.New(Options(cfg), fx.NopLogger).Start(context.Background())
	require.ErrorIs(t, err, natsforward.ErrInvalidConfig)
	require.ErrorContains(t, err, "fleetd: the NATS forwarder (--nats-stream, --nats-subject)")

	cfg.NATS.Subject = ""
	a := fx.New(Options(cfg), fx.NopLogger)
	require.NoError(t, a.Start(context.Background()))
	select {
	case sig := <-a.Wait():
		require.Equal(t, 1, sig.ExitCode)
	case <-time.After(30 * time.Second):
		t.Fatal("fleetd did not stop for a missing stream")
	}
	require.NoError(t, a.Stop(context.Background()))
}

// TestServeNATSFlags: serve refuses half a NATS configuration.
func TestServeNATSFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--nats-stream", "S"}, "--nats-stream and --nats-subject need --nats-url (or FLEETD_NATS_URL)"},
		{[]string{"--nats-url", "nats://127.0.0.1:1"}, "--nats-url needs --nats-stream (or FLEETD_NATS_STREAM): the JetStream stream to forward to"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), tc.args, noEnv, strings.NewReader(""), &out, &errOut)
		require.Equal(t, exitFailure, code, "%v: %s", tc.args, errOut.String())
		require.Contains(t, errOut.String(), tc.want)
	}
}

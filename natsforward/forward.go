package natsforward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
)

// Defaults of Config.
const (
	DefaultName       = "nats_forward"
	DefaultPageSize   = 1000
	DefaultAckTimeout = 10 * time.Second
)

// MaxPageSize bounds Config.PageSize. It also bounds how far back the
// forwarder reads the stream at its start: the messages it may have
// published without saving its position are at most one page.
const MaxPageSize = 10000

// The headers of a forwarded message besides jetstream.MsgIDHeader
// (Nats-Msg-Id, "canonlog-<seq>") and jetstream.ExpectedLastSeqHeader.
// Host, rollout and event id headers are set only when the event has
// one; their values, like subject tokens, escape what a header cannot
// carry (see appendHeaderValue): url.PathUnescape gives the id back.
const (
	HeaderSeq      = "Canonlog-Seq"      // the event's seq, decimal
	HeaderKind     = "Canonlog-Kind"     // the event's kind
	HeaderTS       = "Canonlog-Ts"       // the event's ts, RFC 3339 in UTC with microseconds
	HeaderHost     = "Canonlog-Host"     // the host id
	HeaderRollout  = "Canonlog-Rollout"  // the rollout id
	HeaderEventID  = "Canonlog-Event-Id" // the event id
	HeaderConsumer = "Canonlog-Consumer" // the forwarder's consumer name (Config.Name)
)

// MsgIDPrefix begins every Nats-Msg-Id the forwarder sets; the seq
// follows.
const MsgIDPrefix = "canonlog-"

// Config configures a Forwarder. A nil *Config is refused: Stream is
// required.
type Config struct {
	// Name is the forwarder's consumer name: its position in
	// canonlog_consumers, and the Canonlog-Consumer header of its
	// messages. Defaults to DefaultName.
	Name string
	// Stream is the JetStream stream the messages go to. It must exist
	// (Run does not create it), its subjects must cover the subjects
	// Subject renders, and it must hold only this forwarder's messages.
	// Required.
	Stream string
	// Subject is the template of each message's subject: dot-separated
	// tokens of literal text and the placeholders {kind}, {host} and
	// {rollout}. An empty id becomes EmptyToken; other ids are escaped
	// (see appendToken). Defaults to DefaultSubject.
	Subject string
	// Kinds restricts the forwarder to events of these kinds. Defaults to
	// every kind.
	Kinds []eventlog.Kind
	// FromHead starts a forwarder that has no position yet at the head of
	// the log instead of at its beginning.
	FromHead bool
	// PageSize is the most events read, published and acknowledged at a
	// time. Defaults to DefaultPageSize; at most MaxPageSize.
	PageSize int
	// PollInterval is the wait between polls once the forwarder has
	// caught up. Defaults to eventlog.DefaultPollInterval.
	PollInterval time.Duration
	// AckTimeout bounds the wait for a page's acknowledgements; the page
	// is then tried again. Defaults to DefaultAckTimeout.
	AckTimeout time.Duration
	// Attempts, MinBackoff, MaxBackoff and OnFailure are the consumer's
	// (consumer.Config), for an event that cannot be published
	// (ErrUnpublishable). MinBackoff and MaxBackoff also bound the wait
	// before the forwarder tries a page again after NATS failed it
	// (unreachable, a timeout): that is retried until Run's context ends.
	// Default as in consumer.Config; OnFailure defaults to
	// consumer.FailStop, and consumer.FailPark leaves the parked event
	// out of the stream.
	Attempts               int
	MinBackoff, MaxBackoff time.Duration
	OnFailure              consumer.FailurePolicy
	// Logger receives a line for each failed publish and each retry.
	// Defaults to slog.Default().
	Logger *slog.Logger
}

// Forwarder publishes the log's events to a JetStream stream, in the
// log's commit order, each exactly once. Make one with New.
type Forwarder struct {
	log  *eventlog.Log
	js   jetstream.JetStream
	cfg  Config
	subj *template
	c    *consumer.Consumer

	running atomic.Bool

	// The state of a run, touched only by the goroutine in Run.
	stream jetstream.Stream
	maxMsg int    // the largest message the connection and the stream take
	last   uint64 // the stream's last sequence, as far as this forwarder knows
	synced bool   // last and skip were read from the stream
	// skip holds the seqs of the events already in the stream beyond the
	// consumer's saved position: published by an instance that stopped
	// before it saved. They are not published again.
	skip map[int64]bool
	// prev holds the seqs of the last page acknowledged: the consumer
	// gives it again when it failed to save its position after it.
	prev map[int64]bool
	// dups holds the seqs JetStream acknowledged as duplicates in the page
	// in hand (its Nats-Msg-Id was in the duplicates window).
	dups  map[int64]bool
	fatal error
	stop  context.CancelFunc
}

var streamNameRE = regexp.MustCompile(`^[^\s.*>/\\]+$`)

// New checks cfg and returns a forwarder of log's events to js. It touches
// neither the database nor NATS: Run does.
func New(log *eventlog.Log, js jetstream.JetStream, cfg *Config) (*Forwarder, error) {
	if log == nil || js == nil || cfg == nil {
		return nil, fmt.Errorf("natsforward: %w: a log, a jetstream.JetStream and a *Config with Stream are required", ErrInvalidConfig)
	}
	c := *cfg
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Subject == "" {
		c.Subject = DefaultSubject
	}
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("natsforward %s: %w: "+format, append([]any{c.Name, ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.Stream == "":
		return nil, invalid("Stream is required: the name of the JetStream stream to publish to")
	case !streamNameRE.MatchString(c.Stream):
		return nil, invalid("Stream %q is not a stream name: no whitespace, '.', '*', '>', '/' or '\\'", c.Stream)
	case c.PageSize < 0 || c.PageSize > MaxPageSize:
		return nil, invalid("PageSize is %d: between 0 (default %d) and %d", c.PageSize, DefaultPageSize, MaxPageSize)
	case c.AckTimeout < 0:
		return nil, invalid("AckTimeout is %s: use 0 for %s or a positive duration", c.AckTimeout, DefaultAckTimeout)
	}
	subj, err := parseTemplate(c.Subject)
	if err != nil {
		return nil, invalid("%v", err)
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	f := &Forwarder{log: log, js: js, cfg: c, subj: subj}
	con, err := consumer.New(log, &consumer.Config{
		Name: c.Name, Kinds: c.Kinds, FromHead: c.FromHead, PageSize: c.PageSize, PollInterval: c.PollInterval,
		Attempts: c.Attempts, MinBackoff: c.MinBackoff, MaxBackoff: c.MaxBackoff, OnFailure: c.OnFailure, Logger: c.Logger,
		HandleBatch: f.handle,
	})
	if err != nil {
		return nil, fmt.Errorf("natsforward %s: %w: %w", c.Name, ErrInvalidConfig, err)
	}
	f.c = con
	if c.MinBackoff == 0 {
		f.cfg.MinBackoff = consumer.DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		f.cfg.MaxBackoff = max(consumer.DefaultMaxBackoff, f.cfg.MinBackoff)
	}
	return f, nil
}

// Name returns the forwarder's consumer name.
func (f *Forwarder) Name() string { return f.cfg.Name }

// Run checks the stream, takes the forwarder's consumer over and forwards
// events until ctx ends (it then returns nil, once the page in flight is
// acknowledged or has failed), or something stops it: the stream is
// missing or does not cover the subjects (ErrStream), holds a message
// the forwarder did not publish (ErrStreamModified), an event cannot be
// published under consumer.FailStop (*consumer.HandlerError wrapping
// ErrUnpublishable), another instance deposed it (consumer.ErrDeposed),
// or the database failed. NATS being unreachable does not stop it: it
// waits and tries again. Run the same Forwarder once at a time.
func (f *Forwarder) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return fmt.Errorf("natsforward %s: %w", f.cfg.Name, ErrRunning)
	}
	defer f.running.Store(false)
	if err := f.open(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.stop, f.fatal, f.synced = cancel, nil, false
	f.skip, f.prev, f.dups = nil, nil, nil
	err := f.c.Run(runCtx)
	if f.fatal != nil {
		return f.fatal
	}
	return err
}

// open finds the stream and checks that it takes the template's
// subjects, waiting for NATS while it is unreachable.
func (f *Forwarder) open(ctx context.Context) error {
	backoff := f.cfg.MinBackoff
	for {
		err := f.openOnce(ctx)
		if err == nil || errors.Is(err, ErrStream) || errors.Is(err, nats.ErrConnectionClosed) || ctx.Err() != nil {
			return err
		}
		f.cfg.Logger.Warn("natsforward: cannot read the stream; trying again", "consumer", f.cfg.Name, "stream", f.cfg.Stream,
			"error", err, "in", backoff)
		sleep(ctx, backoff)
		backoff = min(2*backoff, f.cfg.MaxBackoff)
	}
}

func (f *Forwarder) openOnce(ctx context.Context) error {
	s, err := f.js.Stream(ctx, f.cfg.Stream)
	if err != nil {
		return f.streamError(err)
	}
	f.stream = s
	return f.check(s.CachedInfo())
}

// streamError wraps an error reading the stream: ErrStream when the
// stream or JetStream is not there.
func (f *Forwarder) streamError(err error) error {
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("natsforward %s: %w: stream %q does not exist: create it first (docs/consumers.md, \"Forwarding to NATS JetStream\")",
			f.cfg.Name, ErrStream, f.cfg.Stream)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return fmt.Errorf("natsforward %s: %w: %w", f.cfg.Name, ErrStream, err)
	}
	return fmt.Errorf("natsforward %s: stream %s: %w", f.cfg.Name, f.cfg.Stream, err)
}

// check checks that the stream takes every subject the template renders
// for the forwarder's kinds, and notes its message size limit.
func (f *Forwarder) check(info *jetstream.StreamInfo) error {
	var patterns []string
	if len(f.cfg.Kinds) == 0 {
		patterns = []string{f.subj.pattern("")}
	}
	for _, k := range f.cfg.Kinds {
		patterns = append(patterns, f.subj.pattern(k))
	}
	for _, p := range patterns {
		covered := false
		for _, s := range info.Config.Subjects {
			covered = covered || subjectCovered(p, s)
		}
		if !covered {
			return fmt.Errorf("natsforward %s: %w: stream %q takes subjects %q, which do not cover %q (from template %q): "+
				"add %q to the stream's subjects, or change the template", f.cfg.Name, ErrStream, f.cfg.Stream,
				info.Config.Subjects, p, f.subj.src, p)
		}
	}
	f.maxMsg = int(f.js.Conn().MaxPayload())
	if m := int(info.Config.MaxMsgSize); m > 0 {
		f.maxMsg = min(f.maxMsg, m)
	}
	if info.Config.Retention != jetstream.LimitsPolicy {
		f.cfg.Logger.Warn("natsforward: the stream's retention is not limits: messages removed by its consumers cannot be told "+
			"from messages never published, and may be published again after a restart", "consumer", f.cfg.Name, "stream", f.cfg.Stream,
			"retention", info.Config.Retention.String())
	}
	return nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// msgID is an event's Nats-Msg-Id.
func msgID(seq int64) string { return MsgIDPrefix + strconv.FormatInt(seq, 10) }

package natsforward

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
)

// errWrongLastSeq marks a page JetStream refused because the stream's
// last sequence was not the one the forwarder expected.
var errWrongLastSeq = errors.New("the stream's last sequence is not the expected one")

// errCodeWrongLastMsgID is JetStream's error code for a message whose
// Nats-Expected-Last-Msg-Id is not the stream's last message id
// (JSStreamWrongLastMsgIDErr); package jetstream names no constant for it.
const errCodeWrongLastMsgID jetstream.ErrorCode = 10070

// fatalError stops Run: nothing the forwarder can retry mends it.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// handle is the consumer's HandleBatch: it publishes the page's events
// that the stream does not hold yet, and returns nil once JetStream
// acknowledged every one. NATS failures are retried here, after reading
// the stream's tail again, until ctx ends; an event that cannot be
// published fails the page with ErrUnpublishable before any of it is
// published, for the consumer's failure policy.
func (f *Forwarder) handle(ctx context.Context, events []eventlog.Event) error {
	msgs := make([]*nats.Msg, len(events))
	for i := range events {
		m, err := f.message(&events[i])
		if err != nil {
			return err
		}
		msgs[i] = m
	}
	backoff := f.cfg.MinBackoff
	for refused := 0; ; {
		err := f.publish(ctx, events, msgs)
		if err == nil {
			clear(f.dups)
			return nil
		}
		if fe := (*fatalError)(nil); errors.As(err, &fe) {
			f.fatal = fe.err
			f.stop()
			return fe.err
		}
		f.synced = false
		if ctx.Err() != nil {
			return err
		}
		// A refusal for the last sequence is what a late message of a
		// killed instance causes: read the tail again at once, the first
		// time.
		if errors.Is(err, errWrongLastSeq) && refused == 0 {
			refused++
			f.cfg.Logger.Info("natsforward: the stream moved; reading its tail again", "consumer", f.cfg.Name, "stream", f.cfg.Stream, "error", err)
			continue
		}
		f.cfg.Logger.Warn("natsforward: publish failed; trying again", "consumer", f.cfg.Name, "stream", f.cfg.Stream,
			"first_seq", events[0].Seq, "events", len(events), "error", err, "in", backoff)
		sleep(ctx, backoff)
		if ctx.Err() != nil {
			return err
		}
		backoff = min(2*backoff, f.cfg.MaxBackoff)
	}
}

// publish publishes the events not in the stream yet, pipelined, each
// expecting the stream's last sequence to be its predecessor's, and waits
// for every acknowledgement.
func (f *Forwarder) publish(ctx context.Context, events []eventlog.Event, msgs []*nats.Msg) error {
	if !f.synced {
		if err := f.sync(ctx); err != nil {
			return err
		}
	}
	futures := make([]jetstream.PubAckFuture, 0, len(events))
	seqs := make([]int64, 0, len(events))
	var pubErr error
	for i := range events {
		seq := events[i].Seq
		if f.inStream(seq) {
			continue
		}
		m := msgs[i]
		m.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(f.last+uint64(len(futures)), 10))
		// The expected last sequence alone does not chain a pipeline: when
		// one message is refused because another landed before it, the
		// next one expects what the stream now holds, and lands out of
		// order. Expecting also its predecessor's message id, it cannot.
		if len(seqs) > 0 {
			m.Header.Set(jetstream.ExpectedLastMsgIDHeader, msgID(seqs[len(seqs)-1]))
		} else {
			delete(m.Header, jetstream.ExpectedLastMsgIDHeader)
		}
		fut, err := f.js.PublishMsgAsync(m, jetstream.WithStallWait(f.cfg.AckTimeout))
		if err != nil {
			pubErr = fmt.Errorf("publish event %d: %w", seq, err)
			break
		}
		futures = append(futures, fut)
		seqs = append(seqs, seq)
	}
	// Every future is waited for, so that none is left pending into the
	// next page, unless the acknowledgements take longer than AckTimeout.
	timeout := time.NewTimer(f.cfg.AckTimeout)
	defer timeout.Stop()
	var ackErr error
	next := f.last + 1 // the sequence the next acknowledgement must carry
wait:
	for i, fut := range futures {
		select {
		case ack := <-fut.Ok():
			switch {
			case ackErr != nil:
			case ack.Duplicate:
				// Its Nats-Msg-Id is in the duplicates window: the event is
				// in the stream, though not in the tail read. The messages
				// after it expected it to take a sequence.
				if f.dups == nil {
					f.dups = map[int64]bool{}
				}
				f.dups[seqs[i]] = true
				ackErr = fmt.Errorf("event %d: %w: it is already at stream sequence %d (Nats-Msg-Id %s)", seqs[i], errWrongLastSeq,
					ack.Sequence, msgID(seqs[i]))
			case ack.Sequence != next:
				ackErr = fmt.Errorf("event %d: acknowledged at stream sequence %d, expected %d: %w", seqs[i], ack.Sequence, next, errWrongLastSeq)
			default:
				next++
			}
		case err := <-fut.Err():
			if ackErr == nil {
				ackErr = fmt.Errorf("event %d: %w", seqs[i], err)
				var apiErr *jetstream.APIError
				if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
					apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant || apiErr.ErrorCode == errCodeWrongLastMsgID) {
					ackErr = fmt.Errorf("event %d: %w: %w", seqs[i], errWrongLastSeq, err)
				}
			}
		case <-timeout.C:
			ackErr = errors.Join(ackErr, fmt.Errorf("no acknowledgement within %s for events %d to %d", f.cfg.AckTimeout, seqs[i], seqs[len(seqs)-1]))
			break wait
		}
	}
	f.last = next - 1
	if err := errors.Join(ackErr, pubErr); err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) {
			return &fatalError{fmt.Errorf("natsforward %s: %w", f.cfg.Name, err)}
		}
		return err
	}
	// The page's events are in the stream now: past the saved position
	// until the consumer saves it, which may fail; then the consumer reads
	// them again, and they are skipped.
	clear(f.prev)
	if f.prev == nil {
		f.prev = make(map[int64]bool, len(events))
	}
	for _, ev := range events {
		delete(f.skip, ev.Seq)
		f.prev[ev.Seq] = true
	}
	return nil
}

// inStream reports whether the event seq is known to be in the stream
// already.
func (f *Forwarder) inStream(seq int64) bool {
	return f.skip[seq] || f.prev[seq] || f.dups[seq]
}

// sync reads the stream's last sequence and the seqs of the messages
// after the one of the consumer's last handled event: those a killed or
// failed instance published without saving its position. It fails with
// a fatalError when the stream is gone, no longer covers the subjects,
// or holds a message the forwarder did not publish.
func (f *Forwarder) sync(ctx context.Context) error {
	info, err := f.stream.Info(ctx)
	if err != nil {
		if err := f.streamError(err); errors.Is(err, ErrStream) {
			return &fatalError{err}
		}
		return fmt.Errorf("natsforward %s: stream %s: %w", f.cfg.Name, f.cfg.Stream, err)
	}
	if err := f.check(info); err != nil {
		return &fatalError{err}
	}
	handled, err := f.handledSeq(ctx)
	if err != nil {
		return err
	}
	skip := map[int64]bool{}
	last, first := info.State.LastSeq, info.State.FirstSeq
	for s, n := last, 0; s >= first && s > 0 && n < MaxPageSize; s, n = s-1, n+1 {
		msg, err := f.stream.GetMsg(ctx, s)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted
		}
		if err != nil {
			return fmt.Errorf("natsforward %s: read stream %s at %d: %w", f.cfg.Name, f.cfg.Stream, s, err)
		}
		seq, err := strconv.ParseInt(msg.Header.Get(HeaderSeq), 10, 64)
		if by := msg.Header.Get(HeaderConsumer); err != nil || by != f.cfg.Name {
			return &fatalError{fmt.Errorf("natsforward %s: %w: stream %q holds, at sequence %d, a message on %q that it did not publish "+
				"(%s %q, %s %q): give the forwarder a stream of its own", f.cfg.Name, ErrStreamModified, f.cfg.Stream, s, msg.Subject,
				HeaderConsumer, by, HeaderSeq, msg.Header.Get(HeaderSeq))}
		}
		if seq == handled {
			break
		}
		skip[seq] = true
	}
	if len(skip) > 0 {
		f.cfg.Logger.Info("natsforward: the stream holds events past the saved position; they are not published again",
			"consumer", f.cfg.Name, "stream", f.cfg.Stream, "handled_seq", handled, "events", len(skip))
	}
	f.last, f.skip, f.synced = last, skip, true
	return nil
}

// handledSeq returns the seq of the last event the consumer saved as
// handled.
func (f *Forwarder) handledSeq(ctx context.Context) (int64, error) {
	sts, err := consumer.ReadStatus(ctx, f.log)
	if err != nil {
		return 0, fmt.Errorf("natsforward %s: %w", f.cfg.Name, err)
	}
	for _, s := range sts {
		if s.Name == f.cfg.Name {
			return s.HandledSeq, nil
		}
	}
	return 0, nil
}

// maxSeqDigits is the longest uint64 in decimal: room for the expected
// last sequence header's value.
const maxSeqDigits = 20

// message returns ev's message, without its expected last sequence, or
// an error wrapping ErrUnpublishable.
func (f *Forwarder) message(ev *eventlog.Event) (*nats.Msg, error) {
	subj := f.subj.render(make([]byte, 0, 64), ev)
	if len(subj) > MaxSubjectBytes {
		return nil, fmt.Errorf("natsforward %s: event %d: %w: its subject is %d bytes, over %d", f.cfg.Name, ev.Seq, ErrUnpublishable, len(subj), MaxSubjectBytes)
	}
	h := nats.Header{}
	set := func(k, v string) { h[k] = []string{v} }
	set(jetstream.MsgIDHeader, msgID(ev.Seq))
	set(HeaderSeq, strconv.FormatInt(ev.Seq, 10))
	set(HeaderKind, string(ev.Kind))
	set(HeaderTS, ev.TS.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
	set(HeaderConsumer, f.cfg.Name)
	var b []byte
	for _, id := range []struct{ k, v string }{{HeaderHost, ev.HostID}, {HeaderRollout, ev.RolloutID}, {HeaderEventID, ev.EventID}} {
		if id.v != "" {
			b = appendHeaderValue(b[:0], id.v)
			set(id.k, string(b))
		}
	}
	// "NATS/1.0\r\n", "Key: value\r\n" each, "\r\n".
	size := len(ev.Payload) + 12 + len(jetstream.ExpectedLastSeqHeader) + 4 + maxSeqDigits +
		len(jetstream.ExpectedLastMsgIDHeader) + 4 + len(MsgIDPrefix) + maxSeqDigits
	for k, vs := range h {
		size += len(k) + len(vs[0]) + 4
	}
	if f.maxMsg > 0 && size > f.maxMsg {
		return nil, fmt.Errorf("natsforward %s: event %d: %w: its message is %d bytes, over the limit of %d (the server's max_payload, or the stream's max_msg_size)",
			f.cfg.Name, ev.Seq, ErrUnpublishable, size, f.maxMsg)
	}
	return &nats.Msg{Subject: string(subj), Data: ev.Payload, Header: h}, nil
}

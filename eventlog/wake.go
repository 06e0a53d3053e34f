package eventlog

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lib/pq"
)

// NotifyChannel is the PostgreSQL channel a Log with Config.Notify sends
// its wake-ups on (NOTIFY canonlog_appended). The payload is the kinds
// appended since the previous notification, comma-separated, or empty
// for "any kind".
const NotifyChannel = "canonlog_appended"

// NotifyInterval is the least time between two notifications one Log
// sends: the appends committed meanwhile are announced together, so that
// a busy log sends at most 200 a second, whatever its append rate.
const NotifyInterval = 5 * time.Millisecond

// maxNotifyPayload bounds a notification's list of kinds; a longer list
// is sent empty, which wakes every subscriber.
const maxNotifyPayload = 1000

// Listener reconnection delays (pq.NewListener).
const (
	listenMinReconnect = 100 * time.Millisecond
	listenMaxReconnect = 10 * time.Second
)

// wakeups is a Log's wake-up machinery: its subscribers, the notifier
// that sends NOTIFY after commits (Config.Notify) and the listener that
// hears other processes' notifications (Config.ListenURL).
type wakeups struct {
	log       *Log
	notify    bool
	listenDSN string

	mu   sync.Mutex
	subs map[*subscription]struct{}
	// The listener runs while there are subscribers.
	listener     *pq.Listener
	listenerDone chan struct{}
	// The notifier: kinds appended since its last notification, whether
	// it is running, and how to stop it.
	pending    map[Kind]struct{}
	pendingAll bool
	notifying  bool
	kick       chan struct{}
	stopNotify chan struct{}
	notifyDone chan struct{}
	closed     bool // Close ran: no notifier or listener starts again
}

// subscription is one Wakeups channel.
type subscription struct {
	c     chan struct{}
	kinds []Kind // nil: every kind
}

func (s *subscription) wants(kinds []Kind) bool {
	if s.kinds == nil || kinds == nil {
		return true
	}
	return slices.ContainsFunc(kinds, func(k Kind) bool { return slices.Contains(s.kinds, k) })
}

func (s *subscription) signal() {
	select {
	case s.c <- struct{}{}:
	default: // a wake-up is already pending
	}
}

func newWakeups(l *Log, cfg *Config) (*wakeups, error) {
	w := &wakeups{log: l, notify: cfg.Notify && l.backend == Postgres, subs: map[*subscription]struct{}{},
		pending: map[Kind]struct{}{}}
	if cfg.ListenURL != "" {
		driver, dsn, _, _, err := parseDatabaseURL(cfg.ListenURL)
		if err != nil {
			return nil, fmt.Errorf("eventlog: Config.ListenURL: %w", err)
		}
		if driver != driverPostgres || l.backend != Postgres {
			return nil, fmt.Errorf("eventlog: Config.ListenURL is for a log on PostgreSQL, and must be a postgres:// URL")
		}
		w.listenDSN = dsn
	}
	return w, nil
}

// Wakeups returns a channel that receives a value soon after an append
// of one of kinds (any kind when none is given) commits, and a function
// that ends the subscription. The channel holds at most one value:
// wake-ups that come before the subscriber reads it are merged. It is a
// hint, never a guarantee: followers still poll, and a wake-up may come
// for an event the caller had already read, or for none it wants.
//
// Wake-ups come from this Log's own appends (Append, AppendBatch, and
// AppendTx's once WakeFollowers is called after the commit) at once, and,
// on PostgreSQL with Config.ListenURL set, from other processes' logs
// with Config.Notify, through LISTEN on a connection of its own that the
// subscriptions share (pq.Listener, reconnecting by itself: a
// reconnection wakes every subscriber, as notifications may have been
// missed meanwhile).
func (l *Log) Wakeups(kinds ...Kind) (<-chan struct{}, func()) {
	w := l.wake
	s := &subscription{c: make(chan struct{}, 1)}
	if len(kinds) > 0 {
		s.kinds = slices.Clone(kinds)
	}
	w.mu.Lock()
	w.subs[s] = struct{}{}
	if len(w.subs) == 1 && w.listenDSN != "" && !w.closed {
		w.startListener()
	}
	w.mu.Unlock()
	var once sync.Once
	return s.c, func() {
		once.Do(func() {
			w.mu.Lock()
			delete(w.subs, s)
			var stop *pq.Listener
			var done chan struct{}
			if len(w.subs) == 0 && w.listener != nil {
				stop, done = w.listener, w.listenerDone
				w.listener, w.listenerDone = nil, nil
			}
			w.mu.Unlock()
			if stop != nil {
				_ = stop.Close()
				<-done
			}
		})
	}
}

// WakeFollowers announces appends of kinds (any kind when none is given)
// that committed: call it after committing a transaction that AppendTx
// wrote to, so that followers waiting for wake-ups (consumers) read them
// at once instead of at their next poll. Append and AppendBatch call it
// themselves.
func (l *Log) WakeFollowers(kinds ...Kind) {
	l.wake.appended(kinds)
}

// appended wakes this Log's subscribers of kinds and has the notifier
// tell other processes.
func (w *wakeups) appended(kinds []Kind) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for s := range w.subs {
		if s.wants(kinds) {
			s.signal()
		}
	}
	if !w.notify || w.closed {
		return
	}
	if kinds == nil {
		w.pendingAll = true
	}
	for _, k := range kinds {
		w.pending[k] = struct{}{}
	}
	if !w.notifying {
		w.notifying = true
		w.kick = make(chan struct{}, 1)
		w.stopNotify = make(chan struct{})
		w.notifyDone = make(chan struct{})
		go w.notifier(w.kick, w.stopNotify, w.notifyDone)
	}
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// notifier sends a notification after each kick, at most one every
// NotifyInterval, until stop is closed.
func (w *wakeups) notifier(kick, stop, done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-stop:
			return
		case <-kick:
		}
		w.mu.Lock()
		payload := ""
		if !w.pendingAll {
			kinds := make([]string, 0, len(w.pending))
			for k := range w.pending {
				kinds = append(kinds, string(k))
			}
			slices.Sort(kinds)
			if payload = strings.Join(kinds, ","); len(payload) > maxNotifyPayload {
				payload = ""
			}
		}
		clear(w.pending)
		w.pendingAll = false
		w.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		// One simple-protocol statement, one round trip: the payload holds
		// kinds only (lowercase letters, digits, underscores, commas).
		// A notification that fails is lost: the consumers' polls find
		// the events it announced.
		_, _ = w.log.db.ExecContext(ctx, `NOTIFY `+NotifyChannel+`, `+pq.QuoteLiteral(payload))
		cancel()
		t := time.NewTimer(NotifyInterval)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// startListener starts listening for other processes' notifications; w.mu
// is held.
func (w *wakeups) startListener() {
	l := pq.NewListener(w.listenDSN, listenMinReconnect, listenMaxReconnect, nil)
	// Listen waits for the connection; a failure here leaves the listener
	// retrying by itself, and polling covers the meantime.
	_ = l.Listen(NotifyChannel)
	done := make(chan struct{})
	w.listener, w.listenerDone = l, done
	go func() {
		defer close(done)
		for n := range l.Notify {
			var kinds []Kind // nil: a reconnection, or every kind
			if n != nil && n.Extra != "" {
				for k := range strings.SplitSeq(n.Extra, ",") {
					kinds = append(kinds, Kind(k))
				}
			}
			w.mu.Lock()
			for s := range w.subs {
				if s.wants(kinds) {
					s.signal()
				}
			}
			w.mu.Unlock()
		}
	}()
}

// close stops the notifier and the listener.
func (w *wakeups) close() {
	w.mu.Lock()
	w.closed = true
	var stops []chan struct{}
	var waits []chan struct{}
	if w.notifying {
		stops, waits = append(stops, w.stopNotify), append(waits, w.notifyDone)
		w.notifying = false
	}
	listener := w.listener
	if listener != nil {
		waits = append(waits, w.listenerDone)
		w.listener, w.listenerDone = nil, nil
	}
	w.mu.Unlock()
	for _, c := range stops {
		close(c)
	}
	if listener != nil {
		_ = listener.Close()
	}
	for _, c := range waits {
		<-c
	}
}

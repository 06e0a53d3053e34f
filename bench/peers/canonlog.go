package peers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/migrations"
)

// canonlogStore is canonlog's log as a service appends to it: the core
// migrations, eventlog.New without a hook (a pure log, no projection),
// and event ids only with Config.EventIDs (no peer measured here keeps a
// uniqueness key).
type canonlogStore struct {
	db       *sqlx.DB
	log      *eventlog.Log
	eventIDs bool
}

func (s *canonlogStore) open(ctx context.Context, url string) error {
	db, err := eventlog.OpenDB(ctx, url)
	if err != nil {
		return err
	}
	s.db = db
	configurePool(db.DB)
	if _, err := migrations.Up(ctx, db); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	s.log, err = eventlog.New(db, nil)
	return err
}

func entry(i int) eventlog.Entry {
	return eventlog.Entry{Kind: eventKind, HostID: hostID(i), RolloutID: rolloutID(i), Payload: json.RawMessage(payload(i))}
}

// entry returns entry i, with an event id when the store gives them.
func (s *canonlogStore) entry(i int) eventlog.Entry {
	e := entry(i)
	if s.eventIDs {
		e.EventID = "peers-" + strconv.Itoa(i)
	}
	return e
}

func (s *canonlogStore) appendOne(ctx context.Context, i int) error {
	_, err := s.log.Append(ctx, s.entry(i))
	return err
}

func (s *canonlogStore) appendBatch(ctx context.Context, first, n int) error {
	batch := make([]eventlog.Entry, n)
	for j := range batch {
		batch[j] = s.entry(first + j)
	}
	_, err := s.log.AppendBatch(ctx, batch)
	return err
}

func (s *canonlogStore) replay(ctx context.Context, _ int64) (events, payloadBytes int64, err error) {
	var last int64
	for page, err := range s.log.Pages(ctx, 0, nil) {
		if err != nil {
			return events, payloadBytes, err
		}
		for _, ev := range page {
			if ev.Seq <= last {
				return events, payloadBytes, fmt.Errorf("seq %d read after seq %d", ev.Seq, last)
			}
			last = ev.Seq
			payloadBytes += int64(len(ev.Payload))
		}
		events += int64(len(page))
	}
	return events, payloadBytes, nil
}

func (s *canonlogStore) count(ctx context.Context) (int64, error) {
	return s.log.Count(ctx, eventlog.Filter{})
}

func (s *canonlogStore) close() error {
	if s.db == nil {
		return nil
	}
	var err error
	if s.log != nil {
		err = s.log.Close()
	}
	return errors.Join(err, s.db.Close())
}

package peers

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	_ "github.com/lib/pq" // the same driver as the other sides
)

// watermillTopic is the topic every event is published to: one log, in
// the tables "watermill_events" and "watermill_offsets_events".
const watermillTopic = "events"

// replayIdleTimeout bounds how long a watermill replay waits for its next
// message before it gives up. The subscriber only reads messages whose
// transaction is older than every transaction still running on the
// server (pg_snapshot_xmin), so a long transaction elsewhere on the same
// server holds it back for as long as it runs.
const replayIdleTimeout = 2 * time.Minute

// watermillStore is watermill-sql with its default PostgreSQL schema and
// offsets adapters, on lib/pq: one Publish per event (single), one
// Publish of the whole batch (batch), and a subscriber of a new consumer
// group acking every message (replay). The event's kind, host and rollout
// travel in the message's metadata, its payload as the message's payload.
type watermillStore struct {
	db        *sql.DB
	beginner  wsql.Beginner
	publisher *wsql.Publisher
	schema    wsql.DefaultPostgreSQLSchema
	offsets   wsql.DefaultPostgreSQLOffsetsAdapter
	replays   int
}

func (s *watermillStore) open(ctx context.Context, url string) error {
	db, err := sql.Open("postgres", url)
	if err != nil {
		return err
	}
	s.db = db
	configurePool(db)
	if err := db.PingContext(ctx); err != nil {
		return err
	}
	s.beginner = wsql.BeginnerFromStdSQL(db)
	// The tables are created up front, untimed, by the subscriber's
	// initialization (it creates the offsets table too), instead of by
	// the publisher's first Publish.
	sub, err := s.subscriber("init")
	if err != nil {
		return err
	}
	if err := sub.SubscribeInitialize(watermillTopic); err != nil {
		_ = sub.Close()
		return fmt.Errorf("initialize schema: %w", err)
	}
	if err := sub.Close(); err != nil {
		return err
	}
	s.publisher, err = wsql.NewPublisher(s.beginner, wsql.PublisherConfig{SchemaAdapter: s.schema}, nil)
	return err
}

func (s *watermillStore) subscriber(group string) (*wsql.Subscriber, error) {
	return wsql.NewSubscriber(s.beginner, wsql.SubscriberConfig{
		ConsumerGroup:  group,
		SchemaAdapter:  s.schema,
		OffsetsAdapter: s.offsets,
	}, nil)
}

func newMessage(ctx context.Context, i int) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), payload(i))
	msg.Metadata.Set("kind", eventKind)
	msg.Metadata.Set("host_id", hostID(i))
	msg.Metadata.Set("rollout_id", rolloutID(i))
	// Publish runs its INSERT under the first message's context.
	msg.SetContext(ctx)
	return msg
}

func (s *watermillStore) appendOne(ctx context.Context, i int) error {
	return s.publisher.Publish(watermillTopic, newMessage(ctx, i))
}

func (s *watermillStore) appendBatch(ctx context.Context, first, n int) error {
	msgs := make([]*message.Message, n)
	for j := range msgs {
		msgs[j] = newMessage(ctx, first+j)
	}
	return s.publisher.Publish(watermillTopic, msgs...)
}

func (s *watermillStore) replay(ctx context.Context, want int64) (events, payloadBytes int64, err error) {
	// A new consumer group starts from the first message.
	s.replays++
	sub, err := s.subscriber("replay_" + strconv.Itoa(s.replays))
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if cerr := sub.Close(); err == nil {
			err = cerr
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, err := sub.Subscribe(ctx, watermillTopic)
	if err != nil {
		return 0, 0, err
	}
	idle := time.NewTimer(replayIdleTimeout)
	defer idle.Stop()
	for events < want {
		select {
		case msg, ok := <-msgs:
			if !ok {
				return events, payloadBytes, fmt.Errorf("subscriber stopped after %d of %d messages", events, want)
			}
			events++
			payloadBytes += int64(len(msg.Payload))
			msg.Ack()
			idle.Reset(replayIdleTimeout)
		case <-idle.C:
			return events, payloadBytes, fmt.Errorf("subscriber delivered %d of %d messages, then none for %s "+
				"(is a long transaction running on the server?)", events, want, replayIdleTimeout)
		case <-ctx.Done():
			return events, payloadBytes, ctx.Err()
		}
	}
	return events, payloadBytes, nil
}

func (s *watermillStore) count(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM `+s.schema.MessagesTable(watermillTopic)).Scan(&n)
	return n, err
}

func (s *watermillStore) close() error {
	if s.db == nil {
		return nil
	}
	if s.publisher != nil {
		_ = s.publisher.Close() // only refuses further Publish calls
	}
	return s.db.Close()
}

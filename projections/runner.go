package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentledger/ledger/eventstore"
)

// Runner feeds every projection from the event log. Each projection is a
// Watermill handler whose topic is its name; the log subscriber turns the
// log into one message per batch and waits for the handler's ack before it
// reads on, so batches are applied in order, one transaction each.
type Runner struct {
	pool        *pgxpool.Pool
	store       eventstore.Store
	projections []Projection
	logger      *slog.Logger
	registry    prometheus.Registerer

	// RetryBackoff bounds the wait between retries of a failing batch.
	RetryBackoff time.Duration
	// LeaseInterval is how often an instance tries to take the leases of
	// projections no instance runs (default 1s): another instance takes
	// over a dead one's projections within about that.
	LeaseInterval time.Duration

	mu       sync.Mutex
	state    map[string]*liveState
	progress *eventstore.Broadcast
	leases   *leases
	rates    map[string]*rateWindow

	// waiting counts WaitFor calls in progress; while there are some, and
	// another instance runs a projection, its checkpoint is polled.
	waiting  atomic.Int64
	pollWake chan struct{}
}

type liveState struct {
	pos     eventstore.Position
	failing error
	seek    *eventstore.Position // set by the handler when a rebuild moved the checkpoint back
}

// NewRunner makes a runner; Run starts it. registry may be nil.
func NewRunner(pool *pgxpool.Pool, store eventstore.Store, logger *slog.Logger, registry prometheus.Registerer, ps ...Projection) *Runner {
	if logger == nil {
		logger = slog.Default()
	}
	r := &Runner{
		pool: pool, store: store, projections: ps, logger: logger, registry: registry,
		RetryBackoff: 30 * time.Second, LeaseInterval: time.Second,
		state: map[string]*liveState{}, progress: eventstore.NewBroadcast(),
		rates: map[string]*rateWindow{}, pollWake: make(chan struct{}, 1),
	}
	names := make([]string, len(ps))
	for i, p := range ps {
		r.state[p.Name()] = &liveState{}
		r.rates[p.Name()] = &rateWindow{}
		names[i] = p.Name()
	}
	r.leases = newLeases(pool, names, time.Second, r.progress.Signal)
	if registry != nil {
		registry.MustRegister(NewStatusCollector(pool, store, names))
	}
	return r
}

// Runs reports whether this instance runs the named projection now (holds
// its lease).
func (r *Runner) Runs(name string) bool { return r.leases.held(name) }

// Projections lists what the runner feeds.
func (r *Runner) Projections() []Projection { return r.projections }

// Run feeds the projections until ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NewSlogLogger(r.logger))
	if err != nil {
		return err
	}
	// A panic in a projection becomes an error: the batch is retried, and
	// the projection shows as failing, like any other error.
	router.AddMiddleware(middleware.Recoverer)
	if r.registry != nil {
		metrics.NewPrometheusMetricsBuilder(r.registry, "ledger", "projections").AddPrometheusRouterMetrics(router)
	}
	sub := &logSubscriber{runner: r}
	for _, p := range r.projections {
		router.AddConsumerHandler(p.Name(), p.Name(), sub, r.handler(p))
	}
	r.leases.interval = r.LeaseInterval
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.leases.run(ctx) }()
	go func() { defer wg.Done(); r.pollCheckpoints(ctx) }()
	defer wg.Wait()
	return router.Run(ctx)
}

// batch is the payload of one message: the position the subscriber read
// after, and the events it read.
type batch struct {
	From   eventstore.Position        `json:"from"`
	Events []eventstore.RecordedEvent `json:"events"`
}

func (r *Runner) handler(p Projection) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		var b batch
		if err := json.Unmarshal(msg.Payload, &b); err != nil {
			return fmt.Errorf("projection %s: decode batch: %w", p.Name(), err)
		}
		ctx := msg.Context()
		var cp eventstore.Position
		var gap bool
		var err error
		for {
			err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) (err error) {
				cp, gap, err = applyBatch(ctx, tx, p, b.From, b.Events, r.rates[p.Name()])
				return err
			})
			if !errors.Is(err, errBusy) || !sleep(ctx, 10*time.Millisecond) {
				break
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				// Stopping, or the lease was lost: not the projection's fault.
				return err
			}
			r.fail(ctx, p.Name(), err)
			return err
		}
		wakeLog(r.store)
		r.mu.Lock()
		st := r.state[p.Name()]
		st.pos, st.failing = cp, nil
		if gap {
			st.seek = &cp
		}
		r.mu.Unlock()
		r.progress.Signal()
		return nil
	}
}

// fail records why a projection stopped, in its status row (outside the
// rolled-back batch) and in memory, and logs it.
//
// The status row is written before waiters are released, so whoever
// WaitFor lets go reads the failure in the status, not a stale "catching
// up".
func (r *Runner) fail(ctx context.Context, name string, err error) {
	defer func() {
		r.mu.Lock()
		r.state[name].failing = err
		r.mu.Unlock()
		r.progress.Signal()
	}()

	var ae *ApplyError
	var id *uuid.UUID
	var typ *string
	var pos *int64
	if errors.As(err, &ae) {
		id, typ = &ae.Event.ID, &ae.Event.Type
		p := int64(ae.Event.Position.Prepare)
		pos = &p
		r.logger.Error("projection stopped on an event", "projection", name, "event_id", ae.Event.ID, "event_type", ae.Event.Type, "position", ae.Event.Position.String(), "error", ae.Err)
	} else {
		r.logger.Error("projection batch failed", "projection", name, "error", err)
	}
	_, dbErr := r.pool.Exec(context.WithoutCancel(ctx), `
		UPDATE projection_checkpoints SET error = $2, error_event_id = $3, error_event_type = $4, error_position = $5,
			error_at = now(), updated_at = now()
		WHERE name = $1`, name, err.Error(), id, typ, pos)
	if dbErr != nil {
		r.logger.Error("recording a projection failure failed", "projection", name, "error", dbErr)
	}
}

// WaitFor blocks until every projection of this runner has applied the log
// up to pos, or is stopped on a failing event (waiting for it would hang).
// Commands call it so that the caller's next query sees its own write.
//
// A projection another instance runs is followed through its checkpoint in
// the database, polled every few milliseconds while someone waits.
func (r *Runner) WaitFor(ctx context.Context, pos eventstore.Position) error {
	r.waiting.Add(1)
	defer r.waiting.Add(-1)
	select {
	case r.pollWake <- struct{}{}:
	default:
	}
	for {
		woken := r.progress.Wait()
		if r.reached(pos) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-woken:
		}
	}
}

func (r *Runner) reached(pos eventstore.Position) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, st := range r.state {
		if st.failing == nil && st.pos.Less(pos) {
			return false
		}
	}
	return true
}

// pollCheckpoints keeps the state of the projections other instances run
// current from their checkpoints, while a WaitFor needs it.
func (r *Runner) pollCheckpoints(ctx context.Context) {
	names := make([]string, 0, len(r.projections))
	for _, p := range r.projections {
		names = append(names, p.Name())
	}
	for ctx.Err() == nil {
		remote := false
		for _, n := range names {
			if !r.leases.held(n) {
				remote = true
			}
		}
		if r.waiting.Load() == 0 || !remote {
			select {
			case <-r.pollWake:
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		rows, err := r.pool.Query(ctx, `
			SELECT name, commit_position, prepare_position, error
			FROM projection_checkpoints WHERE name = ANY($1)`, names)
		if err == nil {
			r.mu.Lock()
			for rows.Next() {
				var name string
				var commit, prepare int64
				var msg *string
				if rows.Scan(&name, &commit, &prepare, &msg) != nil || r.leases.held(name) {
					continue
				}
				st := r.state[name]
				st.pos = eventstore.Position{Commit: uint64(commit), Prepare: uint64(prepare)}
				st.failing = nil
				if msg != nil {
					st.failing = errors.New(*msg)
				}
			}
			r.mu.Unlock()
			rows.Close()
			r.progress.Signal()
		}
		sleep(ctx, 5*time.Millisecond)
	}
}

// takeSeek returns where the subscription of a projection must restart, if
// a rebuild moved its checkpoint.
func (r *Runner) takeSeek(name string) *eventstore.Position {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.state[name]
	seek := st.seek
	st.seek = nil
	return seek
}

func (r *Runner) started(name string, pos eventstore.Position) {
	r.mu.Lock()
	r.state[name].pos = pos
	r.mu.Unlock()
	r.progress.Signal()
}

// logSubscriber is the Watermill subscriber over the event log. Subscribe
// starts, for one projection (the topic), a loop that reads the log after
// the projection's checkpoint and emits one message per batch.
type logSubscriber struct {
	runner *Runner
	wg     sync.WaitGroup
}

var _ message.Subscriber = (*logSubscriber)(nil)

// The loop runs only while this instance holds the projection's lease: it
// waits for the lease, reads the checkpoint, feeds until the lease is lost,
// and waits again.
func (s *logSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	out := make(chan *message.Message)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		r := s.runner
		for {
			leaseCtx, ok := r.leases.wait(ctx, topic)
			if !ok {
				return
			}
			var from eventstore.Position
			err := pgx.BeginFunc(leaseCtx, r.pool, func(tx pgx.Tx) error {
				c, err := readCheckpoint(leaseCtx, tx, topic)
				from = c.pos
				return err
			})
			if err != nil {
				if leaseCtx.Err() == nil {
					r.logger.Error("reading a projection checkpoint failed", "projection", topic, "error", err)
				}
				sleep(leaseCtx, time.Second)
				continue
			}
			r.logger.Info("running projection", "projection", topic, "position", from.String())
			r.started(topic, from)
			s.feed(leaseCtx, topic, from, out)
			if ctx.Err() == nil {
				r.logger.Warn("projection lease lost", "projection", topic)
			}
		}
	}()
	return out, nil
}

func (s *logSubscriber) feed(ctx context.Context, topic string, from eventstore.Position, out chan<- *message.Message) {
	r := s.runner
	for ctx.Err() == nil {
		sub, err := r.store.SubscribeAll(ctx, from)
		if err != nil {
			r.logger.Error("projection subscription failed", "projection", topic, "error", err)
			if !sleep(ctx, time.Second) {
				return
			}
			continue
		}
		from = s.deliver(ctx, topic, sub, from, out)
		_ = sub.Close()
	}
}

// deliver sends batches until ctx ends, the subscription fails, or a
// rebuild asks to re-read from an earlier checkpoint; it returns the
// position to subscribe after next.
func (s *logSubscriber) deliver(ctx context.Context, topic string, sub eventstore.Subscription, from eventstore.Position, out chan<- *message.Message) eventstore.Position {
	r := s.runner
	for {
		evs, err := sub.Next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.logger.Warn("projection subscription interrupted; resubscribing", "projection", topic, "error", err)
				sleep(ctx, 100*time.Millisecond)
			}
			return from
		}
		payload, err := json.Marshal(batch{From: from, Events: evs})
		if err != nil {
			r.logger.Error("encoding a batch failed", "projection", topic, "error", err)
			return from
		}
		backoff := 100 * time.Millisecond
		for {
			msg := message.NewMessage(watermill.NewUUID(), payload)
			msg.SetContext(ctx)
			select {
			case out <- msg:
			case <-ctx.Done():
				return from
			}
			select {
			case <-msg.Acked():
			case <-msg.Nacked():
				// The batch failed and was rolled back: retry it, never skip it.
				if !sleep(ctx, backoff) {
					return from
				}
				backoff = min(backoff*2, r.RetryBackoff)
				continue
			case <-ctx.Done():
				return from
			}
			break
		}
		if seek := r.takeSeek(topic); seek != nil {
			return *seek
		}
		from = evs[len(evs)-1].Position
	}
}

func (s *logSubscriber) Close() error {
	s.wg.Wait()
	return nil
}

// wakeLog tells the log that a transaction ended. The PostgreSQL log
// delivers an event only once every older transaction of the server has
// ended, and a projection's batch is such a transaction: an append that
// committed while it ran is readable only now, and without a wake-up its
// subscribers would find it at their next poll (1 s) instead.
func wakeLog(store eventstore.Store) {
	if c, ok := store.(interface{ Committed() }); ok {
		c.Committed()
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

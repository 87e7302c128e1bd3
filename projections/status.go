package projections

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentledger/ledger/eventstore"
)

// Projection states, as the status and the state gauge name them.
const (
	StateCatchingUp = "catching_up"
	StateLive       = "live"
	StateRebuilding = "rebuilding"
	StateStopped    = "stopped"
)

// States lists every state, in the order the gauge reports them.
var States = []string{StateCatchingUp, StateLive, StateRebuilding, StateStopped}

// Status is what operators see of one projection. The JSON field names are
// a contract (the admin page and scripts read them); add, never rename.
type Status struct {
	Name string `json:"name"`
	// State is catching_up, live, rebuilding (a rebuild of it runs on some
	// instance; the live tables keep answering meanwhile) or stopped (on the
	// failing event in Error).
	State string `json:"state"`
	// RunningOn is the instance (host:pid) holding the projection's lease,
	// empty when none does.
	RunningOn string              `json:"runningOn"`
	Position  eventstore.Position `json:"position"`
	Head      eventstore.Position `json:"head"`
	// LagEvents is how many events of the log the projection has not
	// applied yet; LagCapped says the count stopped at its cap (lagCap).
	LagEvents int64 `json:"lagEvents"`
	LagCapped bool  `json:"lagCapped,omitempty"`
	// LagMs is how long ago the oldest event not applied yet was recorded
	// (0 when live).
	LagMs         int64      `json:"lagMs"`
	EventsApplied int64      `json:"eventsApplied"`
	LastEventAt   *time.Time `json:"lastEventAt,omitempty"`
	// EventsPerSecond is the throughput over the last RateWindow, as the
	// instance running it measured (0 when idle).
	EventsPerSecond float64        `json:"eventsPerSecond"`
	UpdatedAt       time.Time      `json:"updatedAt"`
	Error           *StatusError   `json:"error,omitempty"`
	Rebuild         *RebuildStatus `json:"rebuild,omitempty"`
}

// StatusError is the failing event of a stopped projection.
type StatusError struct {
	Message   string     `json:"message"`
	EventID   *uuid.UUID `json:"eventId,omitempty"`
	EventType *string    `json:"eventType,omitempty"`
	Position  *int64     `json:"position,omitempty"`
	At        *time.Time `json:"at,omitempty"`
}

// RebuildStatus is the last rebuild of a projection: the one running when
// Running, else how the last one ended (phase done or failed).
type RebuildStatus struct {
	Running    bool       `json:"running"`
	Phase      string     `json:"phase"` // building, catching_up, swapping, done, failed
	Events     int64      `json:"events"`
	Percent    float64    `json:"percent"`
	EtaSeconds *float64   `json:"etaSeconds,omitempty"`
	StartedAt  time.Time  `json:"startedAt"`
	UpdatedAt  time.Time  `json:"updatedAt"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	Error      *string    `json:"error,omitempty"`
}

// lagCap bounds the events counted for LagEvents on logs that cannot count
// them in one query.
const lagCap = 10000

// ListStatus reads the status of the named projections from the database
// and the log, so it answers the same on every instance.
func ListStatus(ctx context.Context, pool *pgxpool.Pool, store eventstore.Store, names []string) ([]Status, error) {
	head, err := store.Head(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]Status, 0, len(names))
	for _, name := range names {
		s := Status{Name: name, Head: head, State: StateCatchingUp}
		var commit, prepare int64
		var msg *string
		var e StatusError
		err := pool.QueryRow(ctx, `
			SELECT commit_position, prepare_position, events_applied, last_event_at, events_per_second, updated_at,
			       error, error_event_id, error_event_type, error_position, error_at
			FROM projection_checkpoints WHERE name = $1`, name).
			Scan(&commit, &prepare, &s.EventsApplied, &s.LastEventAt, &s.EventsPerSecond, &s.UpdatedAt,
				&msg, &e.EventID, &e.EventType, &e.Position, &e.At)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("status of %s: %w", name, err)
		}
		if now.Sub(s.UpdatedAt) > RateWindow {
			s.EventsPerSecond = 0
		}
		s.Position = eventstore.Position{Commit: uint64(commit), Prepare: uint64(prepare)}
		if s.Position.Less(head) {
			if err := lag(ctx, pool, store, &s, now); err != nil {
				return nil, fmt.Errorf("lag of %s: %w", name, err)
			}
		}
		if s.Rebuild, err = rebuildStatus(ctx, pool, name, now); err != nil {
			return nil, err
		}
		if s.RunningOn, err = leaseHolder(ctx, pool, name); err != nil {
			return nil, err
		}
		switch {
		case msg != nil:
			e.Message = *msg
			s.State, s.Error = StateStopped, &e
		case s.Rebuild != nil && s.Rebuild.Running:
			s.State = StateRebuilding
		case !s.Position.Less(head):
			s.State = StateLive
		}
		out = append(out, s)
	}
	return out, nil
}

// lag fills LagEvents and LagMs of a projection behind the head. The
// PostgreSQL log counts the events after the position in one query (by
// position, so an append still committing around the checkpoint can make it
// off by its size); other logs are read up to lagCap events.
func lag(ctx context.Context, pool *pgxpool.Pool, store eventstore.Store, s *Status, now time.Time) error {
	first, err := store.ReadAll(ctx, s.Position, 1)
	if err != nil {
		return err
	}
	if len(first) == 0 {
		return nil // nothing readable after it yet: the head is still committing
	}
	s.LagMs = max(0, now.Sub(first[0].Metadata.OccurredAt).Milliseconds())
	if _, ok := eventstore.As[*eventstore.Postgres](store); ok {
		return pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE position > $1 AND position <= $2`,
			int64(s.Position.Prepare), int64(s.Head.Prepare)).Scan(&s.LagEvents)
	}
	evs, err := store.ReadAll(ctx, s.Position, lagCap)
	if err != nil {
		return err
	}
	s.LagEvents, s.LagCapped = int64(len(evs)), len(evs) == lagCap
	return nil
}

// lockHeld is the condition on pg_locks that the advisory lock $2 is held
// in this database.
const lockHeld = `l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND l.classid = (($2::bigint >> 32) & 4294967295)::oid AND l.objid = ($2::bigint & 4294967295)::oid AND l.objsubid = 1`

// leaseHolder names the instance holding name's lease, or "".
func leaseHolder(ctx context.Context, pool *pgxpool.Pool, name string) (string, error) {
	var app string
	err := pool.QueryRow(ctx, `
		SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE a.application_name LIKE $1 || '%' AND `+lockHeld, leaseApplication, advisoryKey("projection-lease", name)).Scan(&app)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("lease of %s: %w", name, err)
	}
	return strings.TrimPrefix(app, leaseApplication), nil
}

// rebuildStatus reads the last rebuild of name; Running is whether its lock
// is held now, on any instance.
func rebuildStatus(ctx context.Context, pool *pgxpool.Pool, name string, now time.Time) (*RebuildStatus, error) {
	var r RebuildStatus
	var done, total int64
	key := advisoryKey("projection-rebuild", name)
	err := pool.QueryRow(ctx, `
		SELECT phase, events, done_position, total_position, started_at, updated_at, finished_at, error,
		       EXISTS (SELECT 1 FROM pg_locks l WHERE `+lockHeld+`)
		FROM projection_rebuilds WHERE name = $1`, name, key).
		Scan(&r.Phase, &r.Events, &done, &total, &r.StartedAt, &r.UpdatedAt, &r.FinishedAt, &r.Error, &r.Running)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rebuild status of %s: %w", name, err)
	}
	if r.FinishedAt == nil && !r.Running {
		r.Phase = PhaseFailed // its process died
	}
	r.Percent = 100
	if total > 0 && r.Phase != PhaseDone {
		r.Percent = min(100, 100*float64(done)/float64(total))
	}
	if r.Running && r.Percent > 0 && r.Percent < 100 {
		elapsed := now.Sub(r.StartedAt).Seconds()
		eta := elapsed*100/r.Percent - elapsed
		r.EtaSeconds = &eta
	}
	return &r, nil
}

// StatusCollector exports ListStatus as Prometheus gauges, read from the
// database at each scrape so every instance reports the same:
// ledger_projection_position, ledger_projection_lag_events,
// ledger_projection_lag_seconds, ledger_projection_events_per_second,
// ledger_projection_state{state} (1 for the current state, 0 for the others)
// and ledger_projection_rebuild_progress_ratio.
type StatusCollector struct {
	pool  *pgxpool.Pool
	store eventstore.Store
	names []string

	position, lagEvents, lagSeconds, rate, state, rebuild *prometheus.Desc
}

// NewStatusCollector makes the collector of the named projections.
func NewStatusCollector(pool *pgxpool.Pool, store eventstore.Store, names []string) *StatusCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("ledger_projection_"+name, help, append([]string{"projection"}, labels...), nil)
	}
	return &StatusCollector{pool: pool, store: store, names: names,
		position:   d("position", "Log position (prepare) the projection has applied up to."),
		lagEvents:  d("lag_events", "Events of the log the projection has not applied yet."),
		lagSeconds: d("lag_seconds", "Age of the oldest event the projection has not applied yet (0 when live)."),
		rate:       d("events_per_second", "Events applied per second over the last 10 seconds."),
		state:      d("state", "1 for the projection's current state (catching_up, live, rebuilding, stopped), 0 for the others.", "state"),
		rebuild:    d("rebuild_progress_ratio", "Fraction of the log a running rebuild has read (absent when none runs)."),
	}
}

func (c *StatusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.position, c.lagEvents, c.lagSeconds, c.rate, c.state, c.rebuild} {
		ch <- d
	}
}

func (c *StatusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := ListStatus(ctx, c.pool, c.store, c.names)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.position, err)
		return
	}
	for _, s := range st {
		ch <- prometheus.MustNewConstMetric(c.position, prometheus.GaugeValue, float64(s.Position.Prepare), s.Name)
		ch <- prometheus.MustNewConstMetric(c.lagEvents, prometheus.GaugeValue, float64(s.LagEvents), s.Name)
		ch <- prometheus.MustNewConstMetric(c.lagSeconds, prometheus.GaugeValue, float64(s.LagMs)/1000, s.Name)
		ch <- prometheus.MustNewConstMetric(c.rate, prometheus.GaugeValue, s.EventsPerSecond, s.Name)
		for _, state := range States {
			v := 0.0
			if s.State == state {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, s.Name, state)
		}
		if s.Rebuild != nil && s.Rebuild.Running {
			ch <- prometheus.MustNewConstMetric(c.rebuild, prometheus.GaugeValue, s.Rebuild.Percent/100, s.Name)
		}
	}
}

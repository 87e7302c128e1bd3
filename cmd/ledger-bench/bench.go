package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/migrations"
)

// Config is one benchmark run.
type Config struct {
	// DatabaseURL is a database run may fill: it is migrated, the log's
	// events table grows, and a scratch table comes and goes.
	DatabaseURL string
	// Duration is the measured time of each side (log, raw) of a cell,
	// split into Rounds that alternate between the two sides, so that load
	// from outside the benchmark (a shared runner, a compiler) falls on both
	// sides of the ratio alike. Each round starts with Warmup, unmeasured,
	// so that connections, plans and caches are warm and every writer is
	// mid-stride when measuring starts.
	Duration time.Duration
	Rounds   int
	Warmup   time.Duration
	// Writers are the concurrent writer counts; Batches the events per
	// append. The table has one row per pair.
	Writers []int
	Batches []int
	// SubWriters appends at SubRate events/s in total, for Duration, while
	// subscribers measure delivery latency.
	SubWriters int
	SubRate    int
	// EnrollClients complete shortcut enrollments over HTTP for Duration;
	// EnrollAccounts accounts are prepared for them (0 skips the row).
	EnrollClients  int
	EnrollAccounts int
	// StepsClients refresh a steps list by stepsID over HTTP for Duration
	// (0 skips the row).
	StepsClients int
	// IntrospectClients introspect a token over HTTP for Duration (0 skips
	// the row).
	IntrospectClients int
	// ExchangeClients redeem authorization codes with PKCE at the token
	// endpoint for Duration; ExchangeCodes codes are issued for them first
	// (0 skips the row).
	ExchangeClients, ExchangeCodes int
	// ESDBWriters append single events through the EventStoreDB adapter to
	// the in-process double of eventstore/esdbtest, one row per count, each
	// for ESDBDuration after Warmup (0 skips the rows). They measure the
	// adapter and the client library, not an EventStoreDB server, of which
	// none can be assumed where the benchmark runs.
	ESDBWriters  []int
	ESDBDuration time.Duration
	// AuditClients ask point-in-time consents of a subject of AuditEvents
	// events; one auditor exports a subject of AuditExportEvents (0 skips
	// the auditor rows). The point-in-time target is one auditor's answer
	// time, so one is the default: more measure the cores they share.
	AuditClients, AuditEvents, AuditExportEvents int
	// Projections selects the projection rows (projections.go).
	Projections ProjectionsConfig
	// Progress receives a line per finished cell (nil: nowhere), so a long
	// run is visibly alive and its details (raw latencies) are not lost.
	Progress io.Writer
}

// DefaultConfig is what `make bench` runs.
func DefaultConfig() Config {
	return Config{
		Duration:          3 * time.Second,
		Rounds:            3,
		Warmup:            500 * time.Millisecond,
		Writers:           []int{1, 8, 32},
		Batches:           []int{1, 100},
		SubWriters:        8,
		SubRate:           2000,
		EnrollClients:     8,
		EnrollAccounts:    400,
		StepsClients:      32,
		IntrospectClients: 64,
		ExchangeClients:   16,
		ExchangeCodes:     6000,
		ESDBWriters:       []int{1, 8},
		ESDBDuration:      3 * time.Second,
		AuditClients:      1, AuditEvents: 1000, AuditExportEvents: 20_000,
		Projections: ProjectionsConfig{RebuildEvents: 1_000_000, LagWriters: 32},
	}
}

// appendsPerStream is how many appends go to one stream before a writer
// starts the next: consent streams are short, and a log that only ever saw
// one event per stream (or one endless stream) would hide the cost of the
// revision lookup or the contention on one stream's index page.
const appendsPerStream = 10

// rawTable has the columns and defaults of the events table and nothing
// else the log needs: no unique constraints, no commit-order index, no
// triggers, no NOT NULL or CHECK. Inserting into it is what PostgreSQL does
// for these rows when it does not have to be an event log.
const rawTable = "bench_raw_events"

const createRawTable = `CREATE TABLE ` + rawTable + ` (
    position    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id       xid8        DEFAULT pg_current_xact_id(),
    stream_id   text,
    revision    bigint,
    event_id    uuid,
    type        text,
    data        jsonb,
    metadata    jsonb,
    recorded_at timestamptz DEFAULT now()
)`

// cell is one row of the table.
type cell struct {
	writers, batch int
	log, raw       result
}

// run measures everything cfg asks for against cfg.DatabaseURL and writes
// the report to out. It fails when a measurement could not be trusted: an
// append or insert failed, or the subscription did not deliver exactly what
// was appended.
func run(ctx context.Context, cfg Config, out io.Writer) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}

	// Every writer holds a connection for the whole cell; the log also
	// keeps one for LISTEN and borrows one for its NOTIFY, and subscribers
	// read through the same pool. A pool no larger than the writer count
	// would measure waiting for the pool, not the log.
	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("database url: %w", err)
	}
	poolCfg.MaxConns = int32(max(slices.Max(cfg.Writers), cfg.SubWriters, cfg.Projections.LagWriters+10) + 4)
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := migrations.Apply(ctx, pool); err != nil {
		return err
	}
	facts, err := machineFacts(ctx, pool)
	if err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `DROP TABLE IF EXISTS `+rawTable); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, createRawTable); err != nil {
		return fmt.Errorf("create %s: %w", rawTable, err)
	}
	defer pool.Exec(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS `+rawTable) //nolint:errcheck // scratch table in a scratch database

	logger := slog.New(slog.NewTextHandler(progress, nil))
	store, err := eventstore.OpenPostgres(ctx, pool, eventstore.PostgresOptions{Logger: logger})
	if err != nil {
		return err
	}
	defer store.Close()
	if cfg.Projections.Only {
		res, err := measureProjections(ctx, cfg, pool, store, progress)
		writeProjectionsReport(out, cfg, res)
		return err
	}

	var cells []cell
	for _, w := range cfg.Writers {
		for _, b := range cfg.Batches {
			c := cell{writers: w, batch: b}
			slice := cfg.Duration / time.Duration(cfg.Rounds)
			for range cfg.Rounds {
				r, err := measure(ctx, w, cfg.Warmup, slice, func(int) func(context.Context) error {
					return logWriter(store, newEventGen("benchconsent"), b)
				})
				if err != nil {
					return fmt.Errorf("log, %d writers × %d events: %w", w, b, err)
				}
				c.log = c.log.add(r)
				if r, err = measure(ctx, w, cfg.Warmup, slice, func(int) func(context.Context) error {
					return rawWriter(pool, newEventGen("benchconsent"), b)
				}); err != nil {
					return fmt.Errorf("raw, %d writers × %d rows: %w", w, b, err)
				}
				c.raw = c.raw.add(r)
			}
			cells = append(cells, c)
			fmt.Fprintf(progress, "%2d writers × %3d: log %8.0f appends/s (p50 %s, p99 %s) | raw %8.0f inserts/s (p50 %s, p99 %s)\n",
				w, b, c.log.perSecond(), ms(c.log.lat.percentile(50)), ms(c.log.lat.percentile(99)),
				c.raw.perSecond(), ms(c.raw.lat.percentile(50)), ms(c.raw.lat.percentile(99)))
		}
	}

	// A second log over its own pool stands for another process: its
	// subscriber is woken by LISTEN/NOTIFY, not by the writer's in-process
	// signal, which is how projections in other instances see appends.
	otherCfg := pool.Config().Copy()
	otherCfg.MaxConns = 4
	otherPool, err := pgxpool.NewWithConfig(ctx, otherCfg)
	if err != nil {
		return err
	}
	defer otherPool.Close()
	other, err := eventstore.OpenPostgres(ctx, otherPool, eventstore.PostgresOptions{Logger: logger})
	if err != nil {
		return err
	}
	defer other.Close()
	subs, subErr := measureSubscription(ctx, cfg, store, []subscriber{
		{name: "same process", store: store},
		{name: "other process (NOTIFY)", store: other},
	})
	for _, s := range subs {
		fmt.Fprintf(progress, "subscription, %s: %d of %d delivered, p50 %s, p99 %s, max %s\n",
			s.name, s.delivered, s.appended, ms(s.lat.percentile(50)), ms(s.lat.percentile(99)), ms(s.lat.max()))
	}

	if subErr != nil {
		writeReport(out, cfg, facts, cells, subs, nil, nil, nil, nil)
		return subErr
	}
	var enroll, steps, exchange *enrollResult
	var introspect *introspectResult
	if cfg.EnrollClients > 0 || cfg.StepsClients > 0 || cfg.IntrospectClients > 0 || cfg.ExchangeClients > 0 {
		srv := startBenchServer(ctx, pool, store, logger)
		defer srv.stop()
		if cfg.EnrollClients > 0 && cfg.EnrollAccounts > 0 {
			r, err := measureEnrollment(ctx, cfg, srv)
			if err != nil {
				return fmt.Errorf("shortcut enrollment: %w", err)
			}
			enroll = &r
			fmt.Fprintf(progress, "shortcut enrollment, %d clients: %.1f/s, p50 %s, p99 %s\n",
				r.clients, r.perSecond(), ms(r.lat.percentile(50)), ms(r.lat.percentile(99)))
		}
		if cfg.StepsClients > 0 {
			r, err := measureSteps(ctx, cfg, srv)
			if err != nil {
				return fmt.Errorf("steps by stepsID: %w", err)
			}
			steps = &r
			fmt.Fprintf(progress, "steps by stepsID, %d clients: %.0f/s, p50 %s, p99 %s\n",
				r.clients, r.perSecond(), ms(r.lat.percentile(50)), ms(r.lat.percentile(99)))
		}
		if cfg.IntrospectClients > 0 {
			r, err := measureIntrospection(ctx, cfg, srv)
			if err != nil {
				return fmt.Errorf("introspection: %w", err)
			}
			introspect = &r
			for _, row := range []struct {
				client string
				r      enrollResult
			}{{"net/http", r.netHTTP}, {"lean", r.lean}} {
				fmt.Fprintf(progress, "introspection, %d clients (%s client): %.0f/s, p50 %s, p99 %s\n",
					row.r.clients, row.client, row.r.perSecond(), ms(row.r.lat.percentile(50)), ms(row.r.lat.percentile(99)))
			}
		}
		if cfg.ExchangeClients > 0 && cfg.ExchangeCodes > 0 {
			r, err := measureCodeExchange(ctx, cfg, srv)
			if err != nil {
				return fmt.Errorf("code exchange: %w", err)
			}
			exchange = &r
			fmt.Fprintf(progress, "code exchange, %d clients: %.0f/s, p50 %s, p99 %s\n",
				r.clients, r.perSecond(), ms(r.lat.percentile(50)), ms(r.lat.percentile(99)))
		}
	}
	audit, err := measureAudit(ctx, cfg, pool, store, logger, progress)
	if err != nil {
		return fmt.Errorf("auditor rows: %w", err)
	}
	// Last, so that the double's memory (it keeps every event) weighs on
	// no measurement of the PostgreSQL log.
	esdbRows, err := measureESDB(ctx, cfg, logger, progress)
	if err != nil {
		return err
	}
	projRows, err := measureProjections(ctx, cfg, pool, store, progress)
	if err != nil {
		return err
	}
	if len(esdbRows) == 0 {
		writeReport(out, cfg, facts, cells, subs, enroll, steps, introspect, exchange)
		writeAuditReport(out, cfg, audit)
		writeProjectionsReport(out, cfg, projRows)
		return nil
	}
	// One blank line between the report and the EventStoreDB rows, whichever
	// line of the report comes last.
	var report strings.Builder
	writeReport(&report, cfg, facts, cells, subs, enroll, steps, introspect, exchange)
	writeAuditReport(&report, cfg, audit)
	fmt.Fprint(out, strings.TrimRight(report.String(), "\n")+"\n\n")
	writeESDBReport(out, cfg, esdbRows)
	writeProjectionsReport(out, cfg, projRows)
	return nil
}

func (cfg Config) validate() error {
	switch {
	case cfg.DatabaseURL == "":
		return errors.New("no database url")
	case cfg.Duration <= 0:
		return errors.New("duration must be positive")
	case cfg.Rounds <= 0 || cfg.Duration/time.Duration(cfg.Rounds) < time.Millisecond:
		return errors.New("rounds must be positive and at least a millisecond each")
	case cfg.Warmup < 0:
		return errors.New("warm-up must not be negative")
	case len(cfg.Writers) == 0 || slices.Min(cfg.Writers) <= 0:
		return errors.New("writer counts must be positive")
	case len(cfg.Batches) == 0 || slices.Min(cfg.Batches) <= 0:
		return errors.New("events per append must be positive")
	case cfg.SubWriters <= 0 || cfg.SubRate <= 0:
		return errors.New("subscription writers and rate must be positive")
	case cfg.ESDBDuration < 0:
		return errors.New("EventStoreDB duration must not be negative")
	case len(cfg.ESDBWriters) > 0 && slices.Min(cfg.ESDBWriters) <= 0:
		return errors.New("EventStoreDB writer counts must be positive")
	}
	return nil
}

// result is what one cell measured: operations that completed inside the
// measured window and how long each took.
type result struct {
	window time.Duration
	lat    latencies
}

func (r result) perSecond() float64 {
	if r.window <= 0 {
		return 0
	}
	return float64(len(r.lat)) / r.window.Seconds()
}

// add merges the rounds of one side of a cell.
func (r result) add(o result) result {
	lat := slices.Concat(r.lat, o.lat)
	slices.Sort(lat)
	return result{window: r.window + o.window, lat: lat}
}

// latencies are sorted ascending.
type latencies []time.Duration

// percentile is the nearest-rank percentile (0 when nothing was measured).
func (l latencies) percentile(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	i := int(float64(len(l))*p/100+0.999999) - 1
	return l[min(max(i, 0), len(l)-1)]
}

func (l latencies) max() time.Duration {
	if len(l) == 0 {
		return 0
	}
	return l[len(l)-1]
}

// measure runs one round: writers goroutines, each calling its own op back
// to back for warmup+duration, keeping the operations that completed inside
// the measured window. An operation still running when the window closes
// is not counted and not interrupted: cancelling it would break its
// connection and disturb the next round.
func measure(ctx context.Context, writers int, warmup, duration time.Duration, newOp func(writer int) func(context.Context) error) (result, error) {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	from, to := start.Add(warmup), start.Add(warmup+duration)
	lats := make([][]time.Duration, writers)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		op := newOp(i)
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(to) {
					return
				}
				if err := op(ctx); err != nil {
					errs[i] = err
					cancel()
					return
				}
				if t1 := time.Now(); !t1.Before(from) && t1.Before(to) {
					lats[i] = append(lats[i], t1.Sub(t0))
				}
			}
		})
	}
	wg.Wait()
	if err := parent.Err(); err != nil {
		return result{}, err // interrupted: every writer failed for that one reason
	}
	if err := errors.Join(errs...); err != nil {
		return result{}, err
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	return result{window: duration, lat: all}, nil
}

// logWriter appends batch events per call the way a command does: to its
// own streams, NoStream for a stream's first append and then Exact on the
// revision the previous append returned.
func logWriter(store eventstore.Store, gen *eventGen, batch int) func(context.Context) error {
	var stream string
	var expected eventstore.ExpectedRevision
	appends := 0
	return func(ctx context.Context) error {
		if appends%appendsPerStream == 0 {
			stream, expected = gen.newStream(), eventstore.NoStream
		}
		res, err := store.Append(ctx, stream, expected, gen.events(batch)...)
		if err != nil {
			return err
		}
		expected = eventstore.Exact(res.NextRevision)
		appends++
		return nil
	}
}

// rawWriter inserts the rows logWriter would append: one autocommit INSERT
// per call, of one row or of batch rows in one multi-row statement.
func rawWriter(pool *pgxpool.Pool, gen *eventGen, batch int) func(context.Context) error {
	sql := rawInsertSQL(batch)
	args := make([]any, 0, 6*batch)
	var stream string
	var next int64 // revision of the stream's next row
	appends := 0
	return func(ctx context.Context) error {
		if appends%appendsPerStream == 0 {
			stream, next = gen.newStream(), 0
		}
		args = args[:0]
		for _, e := range gen.events(batch) {
			// The log encodes metadata on every append; so does this.
			meta, err := json.Marshal(e.Metadata)
			if err != nil {
				return err
			}
			// pgtype.UUID is pgx's native encoding. A uuid.UUID goes
			// through pgx's driver.Valuer fallback, which costs far more
			// per id and would charge the baseline for client work that
			// is no part of what PostgreSQL does with the row.
			id := pgtype.UUID{Bytes: e.ID, Valid: true}
			args = append(args, stream, next, id, e.Type, string(e.Data), string(meta))
			next++
		}
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			return fmt.Errorf("insert into %s: %w", rawTable, err)
		}
		appends++
		return nil
	}
}

func rawInsertSQL(rows int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO ` + rawTable + ` (stream_id, revision, event_id, type, data, metadata) VALUES `)
	for r := range rows {
		if r > 0 {
			b.WriteString(", ")
		}
		n := 6 * r
		fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6)
	}
	return b.String()
}

// consentGranted is the benchmark's event: the size and shape of a real
// consent event (about 200 bytes of JSON), plus the wall time just before
// the append, from which subscribers measure delivery latency.
type consentGranted struct {
	ConsentID     uuid.UUID `json:"consentId"`
	SubjectID     uuid.UUID `json:"subjectId"`
	Purpose       string    `json:"purpose"`
	Channel       string    `json:"channel"`
	PolicyVersion string    `json:"policyVersion"`
	AppendedAt    int64     `json:"appendedAt"` // Unix nanoseconds
}

// consentGrantedType is the bench's own event type: shaped like a consent
// record but in a namespace no projection reads, so the synthetic load never
// reaches (or stops) a read model when the whole API runs on the same log.
const consentGrantedType = "bench.consent-granted.v1"

var purposes = []string{"marketing.email", "marketing.sms", "analytics.product", "personalisation", "research.surveys"}

// eventGen makes one writer's streams and events. Each writer has its own,
// so writers share nothing on the client side.
type eventGen struct {
	category string
	actor    string
	subject  uuid.UUID
	n        int
}

func newEventGen(category string) *eventGen {
	return &eventGen{category: category, actor: "account:" + uuid.NewString()}
}

// newStream names a fresh stream, "<category>-<uuid>" like the domain's.
func (g *eventGen) newStream() string {
	g.subject = uuid.New()
	return g.category + "-" + g.subject.String()
}

// events makes the events of one append, stamped with the current time.
func (g *eventGen) events(n int) []eventstore.EventData {
	now := time.Now()
	correlation, causation := uuid.NewString(), uuid.NewString()
	out := make([]eventstore.EventData, n)
	for i := range out {
		g.n++
		data, err := json.Marshal(consentGranted{
			ConsentID:     uuid.New(),
			SubjectID:     g.subject,
			Purpose:       purposes[g.n%len(purposes)],
			Channel:       "web-form",
			PolicyVersion: "2025-06-01",
			AppendedAt:    now.UnixNano(),
		})
		if err != nil {
			panic(err) // a fixed struct of strings and numbers always encodes
		}
		out[i] = eventstore.EventData{
			ID:   uuid.Must(uuid.NewV7()), // time-ordered, as commands make them
			Type: consentGrantedType,
			Data: data,
			Metadata: eventstore.Metadata{
				CorrelationID: correlation,
				CausationID:   causation,
				Actor:         g.actor,
				OccurredAt:    now.UTC(),
			},
		}
	}
	return out
}

// subscriber is a log whose SubscribeAll is measured.
type subscriber struct {
	name  string
	store eventstore.Store
}

// subResult is what one subscriber saw of the paced appends.
type subResult struct {
	name                string
	appended, delivered int
	lat                 latencies
}

// probeCategory marks the streams of the subscription measurement, so that
// subscribers ignore anything else in the log.
const probeCategory = "consentprobe"

// measureSubscription runs cfg.SubWriters writers appending single events
// at cfg.SubRate events/s in total for cfg.Duration while every subscriber
// tails the log from its head, then waits for them to catch up. Each event's
// latency is the time between the wall clock just before its Append and the
// moment Next returned it. A subscriber that delivers fewer or more events
// than were appended makes the run fail.
func measureSubscription(ctx context.Context, cfg Config, writer eventstore.Store, subs []subscriber) ([]subResult, error) {
	head, err := writer.Head(ctx)
	if err != nil {
		return nil, err
	}
	// Whatever way this returns, subscribers are stopped and gone before
	// the caller closes the logs under them.
	var subsDone sync.WaitGroup
	defer subsDone.Wait()
	subCtx, stopSubs := context.WithCancel(ctx)
	defer stopSubs()
	results := make([]subResult, len(subs))
	delivered := make([]atomic.Int64, len(subs))
	subErrs := make([]error, len(subs))
	failed := make([]atomic.Bool, len(subs)) // subErrs[i] is set
	for i, s := range subs {
		fail := func(err error) {
			subErrs[i] = err
			failed[i].Store(true)
		}
		sub, err := s.store.SubscribeAll(subCtx, head)
		if err != nil {
			return nil, fmt.Errorf("subscribe (%s): %w", s.name, err)
		}
		results[i].name = s.name
		subsDone.Go(func() {
			defer sub.Close()
			seen := map[uuid.UUID]bool{}
			for {
				evs, err := sub.Next(subCtx)
				received := time.Now().UnixNano()
				if err != nil {
					if subCtx.Err() == nil {
						fail(fmt.Errorf("subscription (%s): %w", s.name, err))
					}
					return
				}
				for _, e := range evs {
					if !strings.HasPrefix(e.StreamID, probeCategory+"-") {
						continue
					}
					if seen[e.ID] {
						fail(fmt.Errorf("subscription (%s) delivered event %s twice", s.name, e.ID))
						return
					}
					seen[e.ID] = true
					var d consentGranted
					if err := json.Unmarshal(e.Data, &d); err != nil {
						fail(fmt.Errorf("subscription (%s): event %s: %w", s.name, e.ID, err))
						return
					}
					results[i].lat = append(results[i].lat, time.Duration(received-d.AppendedAt))
					delivered[i].Add(1)
				}
			}
		})
	}

	// Writers are paced on a schedule, not by sleeping after each append,
	// so a slow append is followed by a quicker one and the rate holds.
	var appended atomic.Int64
	interval := time.Duration(float64(time.Second) * float64(cfg.SubWriters) / float64(cfg.SubRate))
	start := time.Now()
	end := start.Add(cfg.Duration)
	writeErrs := make([]error, cfg.SubWriters)
	var writers sync.WaitGroup
	for i := range cfg.SubWriters {
		op := logWriter(writer, newEventGen(probeCategory), 1)
		next := start.Add(interval * time.Duration(i) / time.Duration(cfg.SubWriters))
		writers.Go(func() {
			for ctx.Err() == nil {
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				if !time.Now().Before(end) {
					return
				}
				if err := op(ctx); err != nil {
					writeErrs[i] = err
					return
				}
				appended.Add(1)
				next = next.Add(interval)
			}
		})
	}
	writers.Wait()
	if err := errors.Join(writeErrs...); err != nil {
		return nil, fmt.Errorf("subscription writers: %w", err)
	}

	// Catching up after the last append may take one poll interval when a
	// wake-up is lost; anything beyond a generous bound is a failure.
	want := appended.Load()
	deadline := time.Now().Add(10 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		caughtUp := true
		for i := range delivered {
			caughtUp = caughtUp && (delivered[i].Load() >= want || failed[i].Load())
		}
		if caughtUp {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Anything delivered after this point would be a duplicate or a stray:
	// give it a moment to show up before the count is taken.
	time.Sleep(100 * time.Millisecond)
	stopSubs()
	subsDone.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	var errs []error
	for i := range results {
		results[i].appended, results[i].delivered = int(want), len(results[i].lat)
		slices.Sort(results[i].lat)
		if subErrs[i] != nil {
			errs = append(errs, subErrs[i])
		} else if results[i].delivered != results[i].appended {
			errs = append(errs, fmt.Errorf("subscription (%s) delivered %d events, %d were appended", results[i].name, results[i].delivered, results[i].appended))
		}
	}
	return results, errors.Join(errs...)
}

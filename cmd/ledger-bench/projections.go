package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

// Projection rows of `make bench`: how fast a rebuild replays a large log,
// next to PostgreSQL's bulk write rate of the same rows in the same run, and
// how far projections trail commands while many writers append.

// ProjectionsConfig selects the projection rows (a field of Config).
type ProjectionsConfig struct {
	// RebuildEvents is the size of the log the rebuild row replays (0 skips
	// it). The log is filled by bulk INSERT … SELECT of account
	// registrations and activations, one of each per account.
	RebuildEvents int
	// LagWriters append account registrations for Duration while every
	// projection runs; each waits, as a command does, until the projections
	// include its append (0 skips the row).
	LagWriters int
	// Only runs the projection rows and nothing else.
	Only bool
}

type rebuildResult struct {
	logEvents     int64 // events in the log the rebuild read
	accountEvents int64
	rebuild       time.Duration
	fill          time.Duration
	bulkRows      int64
	bulk          time.Duration
}

type lagResult struct {
	writers  int
	appended int
	lat      latencies
	duration time.Duration
}

type projectionResults struct {
	rebuild *rebuildResult
	lag     *lagResult
}

// measureProjections runs the selected projection rows on the bench
// database.
func measureProjections(ctx context.Context, cfg Config, pool *pgxpool.Pool, store eventstore.Store, progress io.Writer) (projectionResults, error) {
	var out projectionResults
	if cfg.Projections.LagWriters > 0 {
		r, err := measureLag(ctx, cfg, pool, store)
		if err != nil {
			return out, fmt.Errorf("projection lag: %w", err)
		}
		out.lag = &r
		fmt.Fprintf(progress, "projection lag, %d writers: %d appends, p50 %s, p99 %s\n",
			r.writers, r.appended, ms(r.lat.percentile(50)), ms(r.lat.percentile(99)))
	}
	if cfg.Projections.RebuildEvents > 0 {
		r, err := measureRebuild(ctx, cfg, pool, store, progress)
		if err != nil {
			return out, fmt.Errorf("rebuild: %w", err)
		}
		out.rebuild = &r
		fmt.Fprintf(progress, "rebuild of accounts over %d events: %.0f events/s; bulk insert %.0f rows/s\n",
			r.logEvents, perSecond(r.logEvents, r.rebuild), perSecond(r.bulkRows, r.bulk))
	}
	return out, nil
}

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// fillAccounts appends n events (n/2 accounts registered then activated)
// with bulk INSERT … SELECT, 10,000 events per statement: realistic
// payloads (argon2id-sized hashes, metadata with correlation and causation
// ids), far faster than appending them one by one.
func fillAccounts(ctx context.Context, pool *pgxpool.Pool, n int) error {
	// Small statements: a long one would hold back every log reader of the
	// server (they wait for the oldest running transaction).
	const chunk = 5000 // accounts per statement
	for first := 0; first < n/2; first += chunk {
		last := min(first+chunk, n/2) - 1
		_, err := pool.Exec(ctx, `
			INSERT INTO events (stream_id, revision, event_id, type, data, metadata)
			SELECT 'account-' || a.id, e.rev, gen_random_uuid(),
			       CASE e.rev WHEN 0 THEN $3 ELSE $4 END,
			       CASE e.rev WHEN 0 THEN jsonb_build_object(
			           'accountId', a.id, 'email', 'bench' || a.n || '@example.com',
			           'passwordHash', '$argon2id$v=19$m=65536,t=3,p=2$' || md5(a.n::text) || '$' || md5(a.id::text) || md5(a.n::text),
			           'activationSecretHash', encode(sha256(a.id::text::bytea), 'hex'),
			           'activationExpiresAt', to_char(a.at + interval '1 day', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
			       ELSE jsonb_build_object('accountId', a.id) END,
			       jsonb_build_object('correlationId', gen_random_uuid(), 'causationId', gen_random_uuid(),
			           'actor', CASE e.rev WHEN 0 THEN 'anonymous' ELSE 'account:' || a.id END,
			           'occurredAt', to_char(a.at + e.rev * interval '5 minutes', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
			FROM (SELECT n, gen_random_uuid() AS id, timestamp '2026-01-01' + n * interval '1 second' AS at
			      FROM generate_series($1::int, $2::int) AS n) a
			CROSS JOIN (VALUES (0), (1)) AS e(rev)
			ORDER BY a.n, e.rev`, first, last, account.TypeRegistered, account.TypeActivated)
		if err != nil {
			return err
		}
	}
	return nil
}

func measureRebuild(ctx context.Context, cfg Config, pool *pgxpool.Pool, store eventstore.Store, progress io.Writer) (rebuildResult, error) {
	var r rebuildResult
	start := time.Now()
	if err := fillAccounts(ctx, pool, cfg.Projections.RebuildEvents); err != nil {
		return r, fmt.Errorf("fill the log: %w", err)
	}
	r.fill = time.Since(start)
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE events`); err != nil {
		return r, err
	}
	if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE type LIKE 'account.%') FROM events`).Scan(&r.logEvents, &r.accountEvents); err != nil {
		return r, err
	}
	fmt.Fprintf(progress, "log filled with %d events in %s; rebuilding accounts\n", r.logEvents, r.fill.Round(time.Millisecond))
	// The log's head moves once no older transaction of the server runs.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		var n int64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())`).Scan(&n); err != nil {
			return r, err
		}
		if n == r.logEvents {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("only %d of %d events readable after a minute", n, r.logEvents)
		}
	}
	var lastPrint time.Time
	start = time.Now()
	err := projections.Rebuild(ctx, pool, store, projections.Accounts{}, func(p projections.Progress) {
		if time.Since(lastPrint) > 5*time.Second {
			lastPrint = time.Now()
			fmt.Fprintf(progress, "  rebuild: %s, %d events, %.0f events/s\n", p.Phase, p.Events, perSecond(p.Events, p.Elapsed))
		}
	})
	if err != nil {
		return r, err
	}
	r.rebuild = time.Since(start)

	// The physical limit: the same rows written by the server alone, in one
	// statement, into a table of the same shape and indexes.
	if _, err := pool.Exec(ctx, `DROP TABLE IF EXISTS bench_accounts_bulk; CREATE TABLE bench_accounts_bulk (LIKE accounts INCLUDING ALL)`); err != nil {
		return r, err
	}
	defer pool.Exec(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS bench_accounts_bulk`) //nolint:errcheck // scratch table in a scratch database
	// In 16 statements by key range, not one: a long statement would hold
	// back every log reader of the server.
	start = time.Now()
	for c := range 16 {
		lo := fmt.Sprintf("%x0000000-0000-0000-0000-000000000000", c)
		hi := "ffffffff-ffff-ffff-ffff-ffffffffffff"
		cond := "account_id >= $1 AND account_id <= $2"
		if c < 15 {
			hi = fmt.Sprintf("%x0000000-0000-0000-0000-000000000000", c+1)
			cond = "account_id >= $1 AND account_id < $2"
		}
		tag, err := pool.Exec(ctx, `INSERT INTO bench_accounts_bulk SELECT * FROM accounts WHERE `+cond, lo, hi)
		if err != nil {
			return r, err
		}
		r.bulkRows += tag.RowsAffected()
	}
	r.bulk = time.Since(start)
	return r, nil
}

// measureLag runs every projection while LagWriters append account
// registrations; each writer, like a command, waits until the projections
// include its append, and the wait is the lag.
func measureLag(ctx context.Context, cfg Config, pool *pgxpool.Pool, store eventstore.Store) (lagResult, error) {
	r := lagResult{writers: cfg.Projections.LagWriters}
	runner := projections.NewRunner(pool, store, slog.New(slog.DiscardHandler), nil,
		projections.Accounts{}, projections.Enrollment{}, projections.Vehicles{}, projections.Steps{},
		projections.Clients{}, projections.Consents{}, projections.Webhooks{}, projections.OAuthTokens{})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()
	defer func() { stop(); <-done }()
	// Caught up with what earlier rows appended before measuring.
	head, err := store.Head(ctx)
	if err != nil {
		return r, err
	}
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	err = runner.WaitFor(waitCtx, head)
	cancel()
	if err != nil {
		return r, fmt.Errorf("projections did not catch up before measuring: %w", err)
	}

	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	measureFrom := time.Now().Add(cfg.Warmup)
	end := measureFrom.Add(cfg.Duration)
	for w := range r.writers {
		wg.Go(func() {
			for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
				id := uuid.New()
				data := fmt.Appendf(nil, `{"accountId":%q,"email":"lag%d-%d@example.com","passwordHash":"$argon2id$v=19$m=65536,t=3,p=2$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNo","activationSecretHash":"%064d","activationExpiresAt":%q}`,
					id, w, i, i, time.Now().Add(24*time.Hour).UTC().Format(time.RFC3339Nano))
				res, err := store.Append(ctx, account.Stream(id), eventstore.NoStream, eventstore.EventData{
					ID: uuid.Must(uuid.NewV7()), Type: account.TypeRegistered, Data: data,
					Metadata: eventstore.Metadata{Actor: "anonymous", OccurredAt: time.Now().UTC()},
				})
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				acked := time.Now()
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err = runner.WaitFor(wctx, res.Position)
				cancel()
				if err != nil {
					mu.Lock()
					firstErr = fmt.Errorf("an append never reached the projections: %w", err)
					mu.Unlock()
					return
				}
				if acked.After(measureFrom) && acked.Before(end) {
					mu.Lock()
					r.lat = append(r.lat, time.Since(acked))
					r.appended++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	slices.Sort(r.lat)
	r.duration = cfg.Duration
	return r, firstErr
}

// writeProjectionsReport prints the projection rows.
func writeProjectionsReport(w io.Writer, cfg Config, res projectionResults) {
	if res.lag == nil && res.rebuild == nil {
		return
	}
	fmt.Fprintf(w, "\n### Projections\n\n")
	if l := res.lag; l != nil {
		verdict := "met"
		if l.lat.percentile(99) > 100*time.Millisecond {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "Projection lag (every projection running; each writer appends one account registration and waits, as a command does, until every projection has applied it), %d writers for %s: %.0f appends/s, lag p50 %s, p99 %s, max %s (target p99 ≤ 100 ms: %s)\n\n",
			l.writers, l.duration, float64(l.appended)/l.duration.Seconds(), ms(l.lat.percentile(50)), ms(l.lat.percentile(99)), ms(l.lat.max()), verdict)
	}
	if r := res.rebuild; r != nil {
		rate, bulk := perSecond(r.logEvents, r.rebuild), perSecond(r.bulkRows, r.bulk)
		verdict := "met"
		if rate < 50000 {
			verdict = "NOT met"
		}
		fmt.Fprintln(w, "| rebuild | log events | account events | rebuild time | rebuild events/s | bulk INSERT…SELECT rows/s | rebuild ÷ bulk |")
		fmt.Fprintln(w, "|:--------|-----------:|---------------:|-------------:|-----------------:|--------------------------:|---------------:|")
		fmt.Fprintf(w, "| accounts (shadow tables, swap) | %d | %d | %s | %.0f | %.0f | %s |\n\n",
			r.logEvents, r.accountEvents, r.rebuild.Round(time.Millisecond), rate, bulk, ratio(rate, bulk))
		fmt.Fprintf(w, "The log was filled by bulk INSERT … SELECT in %s (half registrations, half activations). Bulk: the %d rebuilt rows copied by the server alone with INSERT … SELECT (16 statements by key range) into a table of the same shape and indexes. Target ≥ 50,000 events/s: %s.\n\n",
			r.fill.Round(time.Millisecond), r.bulkRows, verdict)
	}
}

package api

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// failureLimiter is a token bucket per key that only failures draw from:
// burst failures in a row empty it, and it refills at burst per window.
// An empty bucket limits its key until the bucket is whole again, so a
// limited key stays refused for up to one window and trips (is recorded)
// once per limitation, not at every refill. A nil limiter limits nothing.
//
// With a database the buckets live in failure_limits, shared by every
// instance: each failure updates its row in a transaction, so the budget is
// global. Refusals are decided from memory: the limited keys are read back
// at most once per refresh interval, so an instance learns another's limit
// within that interval. Without a database (or while it fails) the buckets
// are this instance's own.
type failureLimiter struct {
	mu      sync.Mutex
	scope   string
	burst   float64
	window  time.Duration
	now     func() time.Time
	buckets map[string]*bucket
	swept   time.Time
	warned  bool

	db         *pgxpool.Pool // nil: memory only
	refresh    time.Duration // how stale the limited keys read from db may be
	refreshed  time.Time
	refreshing bool
	log        *slog.Logger
}

type bucket struct {
	tokens   float64
	at       time.Time // when tokens was last brought up to date
	failures int       // failures since the bucket was last whole
	until    time.Time // limited until then; zero when not limited
}

func newFailureLimiter(burst int, window time.Duration, now func() time.Time) *failureLimiter {
	if now == nil {
		now = time.Now
	}
	return &failureLimiter{burst: float64(burst), window: window, now: now, buckets: map[string]*bucket{}, log: slog.Default()}
}

// shared makes the limiter keep its buckets in db under scope.
func (l *failureLimiter) shared(db *pgxpool.Pool, scope string, refresh time.Duration, log *slog.Logger) *failureLimiter {
	if l != nil && db != nil {
		l.db, l.scope, l.refresh, l.log = db, scope, refresh, log
	}
	return l
}

// refill brings b up to now.
func (l *failureLimiter) refill(b *bucket, now time.Time) {
	if elapsed := now.Sub(b.at); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+l.burst*elapsed.Seconds()/l.window.Seconds())
		b.at = now
	}
	if b.tokens >= l.burst {
		b.failures = 0
	}
}

// draw takes one failure from b; it reports whether that emptied it.
func (l *failureLimiter) draw(b *bucket, now time.Time) bool {
	l.refill(b, now)
	b.tokens--
	b.failures++
	if b.tokens >= 1 || now.Before(b.until) {
		return false
	}
	// Whole again after (burst - tokens) / rate.
	b.until = now.Add(time.Duration((l.burst - b.tokens) / l.burst * float64(l.window)))
	return true
}

// blocked reports whether key is limited, and for how long still. It never
// waits on the database while holding the lock: one request refreshes the
// shared view, the others answer from what memory knows.
func (l *failureLimiter) blocked(ctx context.Context, key string) (time.Duration, bool) {
	if l == nil {
		return 0, false
	}
	now := l.now()
	l.readLimited(ctx, now)
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok || !now.Before(b.until) {
		return 0, false
	}
	return b.until.Sub(now), true
}

// fail draws one failure from key's bucket. tripped is true only when this
// failure emptied it: the key is then limited until the bucket is whole.
func (l *failureLimiter) fail(ctx context.Context, key string) (tripped bool, failures int, until time.Time) {
	if l == nil {
		return false, 0, time.Time{}
	}
	now := l.now()
	l.sweep(now)
	if l.db != nil {
		b, tripped, err := l.failShared(ctx, key, now)
		if err == nil {
			if b.until.After(now) {
				l.mu.Lock()
				l.buckets[key] = b // refused from memory from now on
				l.mu.Unlock()
			}
			return tripped, b.failures, b.until
		}
		l.log.Warn("shared failure budget unavailable: counting in memory", slog.String("scope", l.scope), slog.String("error", err.Error()))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxTracked {
			if !l.warned {
				l.warned = true
				l.log.Warn("failure limiter full: new sources are not tracked until a sweep", slog.Int("tracked", len(l.buckets)))
			}
			return false, 0, time.Time{}
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	tripped = l.draw(b, now)
	return tripped, b.failures, b.until
}

// failShared draws from the key's row in one transaction, so that
// instances counting failures of one source at once never lose one.
func (l *failureLimiter) failShared(ctx context.Context, key string, now time.Time) (*bucket, bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	b := &bucket{tokens: l.burst, at: now}
	var tripped bool
	err := pgx.BeginFunc(ctx, l.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO failure_limits (scope, key, tokens, failures, updated_at) VALUES ($1, $2, $3, 0, $4)
			ON CONFLICT (scope, key) DO NOTHING`, l.scope, key, l.burst, now); err != nil {
			return err
		}
		var until *time.Time
		if err := tx.QueryRow(ctx, `
			SELECT tokens, failures, updated_at, limited_until FROM failure_limits
			WHERE scope = $1 AND key = $2 FOR UPDATE`, l.scope, key).Scan(&b.tokens, &b.failures, &b.at, &until); err != nil {
			return err
		}
		if until != nil {
			b.until = *until
		}
		tripped = l.draw(b, now)
		var limited *time.Time
		if !b.until.IsZero() {
			limited = &b.until
		}
		_, err := tx.Exec(ctx, `
			UPDATE failure_limits SET tokens = $3, failures = $4, updated_at = $5, limited_until = $6
			WHERE scope = $1 AND key = $2`, l.scope, key, b.tokens, b.failures, b.at, limited)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("failure budget of %s %s: %w", l.scope, key, err)
	}
	return b, tripped, nil
}

// readLimited reads the keys limited by any instance, at most once per
// refresh interval and by one caller at a time. A failed read keeps what
// memory knows.
func (l *failureLimiter) readLimited(ctx context.Context, now time.Time) {
	if l.db == nil {
		return
	}
	l.mu.Lock()
	if l.refreshing || now.Sub(l.refreshed) < l.refresh {
		l.mu.Unlock()
		return
	}
	l.refreshing, l.refreshed = true, now
	l.mu.Unlock()
	defer func() { l.mu.Lock(); l.refreshing = false; l.mu.Unlock() }()

	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	type limited struct {
		key      string
		failures int
		until    time.Time
	}
	var found []limited
	rows, err := l.db.Query(ctx, `SELECT key, failures, limited_until FROM failure_limits WHERE scope = $1 AND limited_until > $2`, l.scope, now)
	if err == nil {
		var r limited
		_, err = pgx.ForEachRow(rows, []any{&r.key, &r.failures, &r.until}, func() error {
			found = append(found, r)
			return nil
		})
	}
	if err != nil {
		l.log.Warn("reading shared failure limits failed", slog.String("scope", l.scope), slog.String("error", err.Error()))
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range found {
		if b, ok := l.buckets[r.key]; !ok || b.until.Before(r.until) {
			l.buckets[r.key] = &bucket{tokens: 0, at: now, failures: r.failures, until: r.until}
		}
	}
}

// sweep forgets whole, unlimited buckets once a minute (and, shared, the
// rows untouched for a whole window: they have refilled).
func (l *failureLimiter) sweep(now time.Time) {
	l.mu.Lock()
	if now.Sub(l.swept) < time.Minute {
		l.mu.Unlock()
		return
	}
	l.swept = now
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst && !now.Before(b.until) {
			delete(l.buckets, k)
		}
	}
	l.warned = false
	l.mu.Unlock()
	if l.db != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := l.db.Exec(ctx, `
			DELETE FROM failure_limits WHERE scope = $1 AND updated_at < $2 AND (limited_until IS NULL OR limited_until < $3)`,
			l.scope, now.Add(-l.window), now); err != nil {
			l.log.Warn("sweeping shared failure limits failed", slog.String("scope", l.scope), slog.String("error", err.Error()))
		}
	}
}

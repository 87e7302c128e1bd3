package projections

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// leases decide which instance runs each projection when several serve one
// database. An instance runs a projection while it holds the projection's
// lease: a session-level advisory lock taken on one connection dedicated to
// the leases. PostgreSQL releases it when that session ends, so when an
// instance dies (kill -9, a lost machine) its leases are free as soon as the
// server notices the closed connection, and another instance, which tries
// every LeaseInterval, takes them over.
//
// The lease is about doing the work once, not about correctness: every batch
// still takes the projection's transaction lock and compares with the
// checkpoint, so two runners that overlap for a moment neither skip nor
// repeat an event.
type leases struct {
	pool     *pgxpool.Pool
	interval time.Duration
	onChange func()

	mu    sync.Mutex
	state map[string]*lease
}

type lease struct {
	held   bool
	ctx    context.Context
	cancel context.CancelFunc
	ready  chan struct{} // closed when the lease is taken
}

// leaseApplication prefixes the application_name of lease sessions, which
// the status reads to tell which instance runs a projection.
const leaseApplication = "ledger-projections "

// Instance names this process among the instances: host:pid.
func Instance() string {
	host, _ := os.Hostname()
	if len(host) > 32 {
		host = host[:32]
	}
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}

func newLeases(pool *pgxpool.Pool, names []string, interval time.Duration, onChange func()) *leases {
	l := &leases{pool: pool, interval: interval, onChange: onChange, state: map[string]*lease{}}
	for _, n := range names {
		l.state[n] = &lease{ready: make(chan struct{})}
	}
	return l
}

// wait blocks until this instance holds name's lease and returns a context
// that ends when the lease is lost; ok is false when ctx ended first.
func (l *leases) wait(ctx context.Context, name string) (context.Context, bool) {
	for {
		l.mu.Lock()
		st := l.state[name]
		if st.held {
			c := st.ctx
			l.mu.Unlock()
			return c, true
		}
		ready := st.ready
		l.mu.Unlock()
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, false
		}
	}
}

// Held reports whether this instance holds name's lease.
func (l *leases) held(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state[name].held
}

// run takes and keeps leases until ctx ends, then releases them by closing
// the session.
func (l *leases) run(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		l.loseAll()
		if conn != nil {
			closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = conn.Close(closeCtx)
			cancel()
		}
	}()
	for ctx.Err() == nil {
		if conn == nil {
			cfg := l.pool.Config().ConnConfig.Copy()
			cfg.RuntimeParams["application_name"] = leaseApplication + Instance()
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				sleep(ctx, l.interval)
				continue
			}
			conn = c
		}
		if err := l.tryAll(ctx, conn); err != nil {
			// The session and every lock it held are gone (or going):
			// stop running the projections until they are taken again.
			l.loseAll()
			closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(closeCtx)
			cancel()
			conn = nil
		}
		sleep(ctx, l.interval)
	}
}

// tryAll checks the session and tries to take the leases not held yet.
func (l *leases) tryAll(ctx context.Context, conn *pgx.Conn) error {
	if err := conn.Ping(ctx); err != nil {
		return err
	}
	l.mu.Lock()
	var free []string
	for name, st := range l.state {
		if !st.held {
			free = append(free, name)
		}
	}
	l.mu.Unlock()
	for _, name := range free {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, advisoryKey("projection-lease", name)).Scan(&ok); err != nil {
			return err
		}
		if ok {
			l.mu.Lock()
			st := l.state[name]
			st.held = true
			st.ctx, st.cancel = context.WithCancel(ctx)
			close(st.ready)
			l.mu.Unlock()
			l.onChange()
		}
	}
	return nil
}

func (l *leases) loseAll() {
	l.mu.Lock()
	for _, st := range l.state {
		if st.held {
			st.cancel()
			st.held = false
			st.ready = make(chan struct{})
		}
	}
	l.mu.Unlock()
	l.onChange()
}

// Package projectiontest checks read models against the log they are
// projected from: after a fault (a killed process, a restarted database, a
// failing handler), the live tables must be what a rebuild from the log
// gives, row for row.
package projectiontest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/migrations/dbtest"
	"github.com/consentledger/ledger/projections"
)

// AgreeWithRebuild waits (up to wait) until every projection of ps has
// applied the log up to its head in the database of pool, then rebuilds each
// one from store into a scratch database (fresh and migrated, on the test
// server) and compares every table with the live one row for row, and the
// checkpoints (position and number of events applied): an event skipped or
// applied twice shows up as a difference. The log must not grow meanwhile.
func AgreeWithRebuild(tb testing.TB, pool *pgxpool.Pool, store eventstore.Store, wait time.Duration, ps ...projections.Projection) {
	tb.Helper()
	ctx := context.Background()
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name()
	}
	// The log's head can move while the rebuild reads (an append becomes
	// readable once older transactions end): compare only rebuilds that
	// end where the live checkpoints are.
	var scratch *pgxpool.Pool
	for attempt := 0; ; attempt++ {
		CaughtUp(tb, pool, store, wait, names...)
		if scratch != nil {
			scratch.Close()
		}
		var err error
		scratch, err = pgxpool.New(ctx, dbtest.URL(tb))
		if err != nil {
			tb.Fatal(err)
		}
		for _, p := range ps {
			if err := projections.Rebuild(ctx, scratch, store, p, nil); err != nil {
				tb.Fatalf("rebuild %s into a scratch database: %v", p.Name(), err)
			}
		}
		same := true
		for _, p := range ps {
			same = same && checkpoint(tb, pool, p.Name()) == checkpoint(tb, scratch, p.Name())
		}
		if same || attempt == 5 {
			break
		}
	}
	defer scratch.Close()
	for _, p := range ps {
		for _, table := range p.Tables() {
			live, err := projections.Dump(ctx, pool, table)
			if err != nil {
				tb.Fatal(err)
			}
			rebuilt, err := projections.Dump(ctx, scratch, table)
			if err != nil {
				tb.Fatal(err)
			}
			if d := diff(live, rebuilt); d != "" {
				tb.Errorf("projection %s, table %s: the live rows (%d) differ from a rebuild (%d):\n%s", p.Name(), table, len(live), len(rebuilt), d)
			}
		}
		a, b := checkpoint(tb, pool, p.Name()), checkpoint(tb, scratch, p.Name())
		if a != b {
			tb.Errorf("projection %s: live checkpoint %s, rebuilt %s", p.Name(), a, b)
		}
	}
}

// CaughtUp waits until the named projections are live at the log's head,
// and fails at once if one of them is stopped on an error.
func CaughtUp(tb testing.TB, pool *pgxpool.Pool, store eventstore.Store, wait time.Duration, names ...string) {
	tb.Helper()
	deadline := time.Now().Add(wait)
	for {
		st, err := projections.ListStatus(context.Background(), pool, store, names)
		if err == nil && allLive(st) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("projections not at the log's head after %s: %+v (err %v)", wait, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func allLive(st []projections.Status) bool {
	for _, s := range st {
		if s.State != "live" {
			return false
		}
	}
	return true
}

func checkpoint(tb testing.TB, pool *pgxpool.Pool, name string) string {
	tb.Helper()
	var commit, prepare, applied int64
	err := pool.QueryRow(context.Background(), `
		SELECT commit_position, prepare_position, events_applied FROM projection_checkpoints WHERE name = $1`, name).
		Scan(&commit, &prepare, &applied)
	if err != nil {
		tb.Fatalf("checkpoint of %s: %v", name, err)
	}
	return fmt.Sprintf("position %d/%d after %d events", commit, prepare, applied)
}

// diff lists (some of) the rows only one side has.
func diff(live, rebuilt []string) string {
	var out string
	n := 0
	for _, r := range live {
		if !slices.Contains(rebuilt, r) && n < 5 {
			out += "  only live:    " + r + "\n"
			n++
		}
	}
	for _, r := range rebuilt {
		if !slices.Contains(live, r) && n < 10 {
			out += "  only rebuilt: " + r + "\n"
			n++
		}
	}
	if out == "" && len(live) != len(rebuilt) {
		out = "  the same rows, repeated a different number of times\n"
	}
	return out
}

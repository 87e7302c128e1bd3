package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/eventstore"
)

// Progress of a rebuild. Done and Total are log positions (Prepare), which
// grow with the number of events, so Done/Total is the fraction read.
type Progress struct {
	Events  int64
	Done    uint64
	Total   uint64
	Elapsed time.Duration
}

// Rebuild replays the whole log into p's tables from position 0.
//
// It runs in one transaction holding the projection's lock: queries keep
// reading the old rows (the delete is not visible) until the commit swaps in
// the new ones at once, and the live runner of p waits, then continues from
// the rebuilt checkpoint. The transaction holds back the log's xmin while it
// runs, so other projections pause too; that is the price of an atomic swap
// without shadow tables.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, store eventstore.Store, p Projection, report func(Progress)) error {
	start := time.Now()
	head, err := store.Head(ctx)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := lock(ctx, tx, p.Name()); err != nil {
			return err
		}
		if _, err := readCheckpoint(ctx, tx, p.Name()); err != nil {
			return err
		}
		for _, t := range p.Tables() {
			// DELETE, not TRUNCATE: TRUNCATE would block every reader until
			// the commit; DELETE leaves them the old rows.
			if _, err := tx.Exec(ctx, "DELETE FROM "+pgx.Identifier{t}.Sanitize()); err != nil {
				return fmt.Errorf("rebuild %s: clear %s: %w", p.Name(), t, err)
			}
		}
		var pos eventstore.Position
		var applied int64
		var last time.Time
		for {
			evs, err := store.ReadAll(ctx, pos, 1000)
			if err != nil {
				return err
			}
			if len(evs) == 0 {
				break
			}
			for _, ev := range evs {
				if err := p.Apply(ctx, tx, ev); err != nil {
					return &ApplyError{Projection: p.Name(), Event: ev, Err: err}
				}
				pos, last = ev.Position, ev.Metadata.OccurredAt
				applied++
			}
			if report != nil {
				report(Progress{Events: applied, Done: pos.Prepare, Total: max(head.Prepare, pos.Prepare), Elapsed: time.Since(start)})
			}
		}
		if report != nil {
			report(Progress{Events: applied, Done: pos.Prepare, Total: pos.Prepare, Elapsed: time.Since(start)})
		}
		return writeCheckpoint(ctx, tx, p.Name(), pos, applied, last)
	})
}

// Dump returns every row of a table as JSON text, sorted, for comparing a
// rebuilt read model with the live one row for row.
func Dump(ctx context.Context, pool *pgxpool.Pool, table string) ([]string, error) {
	rows, err := pool.Query(ctx, fmt.Sprintf(`SELECT to_jsonb(t)::text FROM %s t ORDER BY 1`, pgx.Identifier{table}.Sanitize()))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

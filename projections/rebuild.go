package projections

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/eventstore"
)

// Progress of a rebuild. Done and Total are log positions (Prepare), which
// grow with the number of events, so Done/Total is the fraction read.
type Progress struct {
	Phase   string // building, catching_up, swapping, done
	Events  int64
	Done    uint64
	Total   uint64
	Elapsed time.Duration
}

// Rebuild phases, as recorded in projection_rebuilds and shown in the status.
const (
	PhaseBuilding   = "building"
	PhaseCatchingUp = "catching_up"
	PhaseSwapping   = "swapping"
	PhaseDone       = "done"
	PhaseFailed     = "failed"
)

// ErrRebuildInProgress is returned when a rebuild of the same projection
// already runs, in this process or in another instance on the database.
var ErrRebuildInProgress = errors.New("a rebuild of this projection is already running")

// RebuildBatch is how many events one shadow-building transaction applies.
// Each batch commits on its own, so a rebuild never holds a transaction (and
// the log readers' xmin) for longer than one batch: with the shadow tables
// unlogged and their late indexes not built yet, 10,000 events take a
// fraction of a second.
const RebuildBatch = 10000

// rebuildBatch is RebuildBatch; tests make it smaller to see several
// batches over a small log.
var rebuildBatch = RebuildBatch

// advisoryKey is the advisory-lock key of one purpose for one projection.
func advisoryKey(purpose, name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(purpose + ":" + name))
	return int64(h.Sum64())
}

// RebuildJob is a rebuild that holds its projection's rebuild lock: a
// session-level advisory lock on a connection of its own (not one of the
// pool's, which the queries need) kept for the job, so a second
// rebuild of the same projection is refused on every instance, and a job
// whose process dies releases it with its connection.
type RebuildJob struct {
	pool  *pgxpool.Pool
	store eventstore.Store
	p     Projection
	conn  *pgx.Conn
	start time.Time
	exact bool     // pipelining diverged once: apply statement by statement
	late  []string // definitions of the late indexes (LateIndexer), dropped from the shadow until it is filled
}

// BeginRebuild takes the rebuild lock of p, or returns ErrRebuildInProgress,
// and records the rebuild as started. Run must follow, or Abandon.
func BeginRebuild(ctx context.Context, pool *pgxpool.Pool, store eventstore.Store, p Projection) (*RebuildJob, error) {
	cfg := pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = "ledger rebuild " + p.Name()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("rebuild %s: %w", p.Name(), err)
	}
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, advisoryKey("projection-rebuild", p.Name())).Scan(&locked); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("rebuild %s: lock: %w", p.Name(), err)
	}
	if !locked {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, ErrRebuildInProgress
	}
	j := &RebuildJob{pool: pool, store: store, p: p, conn: conn, start: time.Now()}
	_, err = pool.Exec(ctx, `
		INSERT INTO projection_rebuilds (name, phase, started_at, updated_at) VALUES ($1, $2, now(), now())
		ON CONFLICT (name) DO UPDATE SET phase = $2, events = 0, done_position = 0, total_position = 0,
			started_at = now(), updated_at = now(), finished_at = NULL, error = NULL`, p.Name(), PhaseBuilding)
	if err != nil {
		j.unlock()
		return nil, fmt.Errorf("rebuild %s: %w", p.Name(), err)
	}
	return j, nil
}

// Abandon releases the lock of a job that will not run.
func (j *RebuildJob) Abandon() { j.unlock() }

func (j *RebuildJob) unlock() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Unlocked before the job returns, so the status says so at once;
	// closing the session releases the lock anyway if that fails.
	_, _ = j.conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, advisoryKey("projection-rebuild", j.p.Name()))
	_ = j.conn.Close(ctx)
}

// Rebuild replays the whole log into p's tables from position 0 while p's
// live runner and the queries go on; it returns ErrRebuildInProgress if
// another rebuild of p runs. See RebuildJob.Run.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, store eventstore.Store, p Projection, report func(Progress)) error {
	j, err := BeginRebuild(ctx, pool, store, p)
	if err != nil {
		return err
	}
	return j.Run(ctx, report)
}

// Run builds the new version of the read model into shadow tables (a schema
// of its own holding a copy of each table's definition), in batches of
// RebuildBatch events from position 0, each batch its own transaction. The
// shadow tables are unlogged while they fill: nobody reads them, and a
// rebuild that dies (or a server crash, which empties unlogged tables) is
// started over from scratch by the next one. When a batch comes back short
// it has caught up with the log; the tables are made logged and get their
// late indexes, and one short transaction takes the projection's lock (the
// live runner waits), applies what was appended meanwhile, moves the live
// tables out and the shadow tables in, and writes the checkpoint. Queries
// read the old tables until that commit and the new ones after it, never a
// half-built model. report may be nil. Run releases the rebuild lock when
// it returns.
func (j *RebuildJob) Run(ctx context.Context, report func(Progress)) (err error) {
	defer j.unlock()
	defer func() {
		phase, msg := PhaseDone, (*string)(nil)
		if err != nil {
			s := err.Error()
			phase, msg = PhaseFailed, &s
			// The shadow is of no use any more (the next rebuild would
			// drop it anyway).
			_, _ = j.pool.Exec(context.WithoutCancel(ctx), "DROP SCHEMA IF EXISTS "+pgx.Identifier{"ledger_rebuild_" + j.p.Name()}.Sanitize()+" CASCADE")
		}
		_, dbErr := j.pool.Exec(context.WithoutCancel(ctx), `
			UPDATE projection_rebuilds SET phase = $2, error = $3, finished_at = now(), updated_at = now()
			WHERE name = $1`, j.p.Name(), phase, msg)
		if err == nil && dbErr != nil {
			err = fmt.Errorf("rebuild %s: %w", j.p.Name(), dbErr)
		}
	}()
	if err := j.run(ctx, report); err != nil {
		var ae *ApplyError
		if errors.As(err, &ae) {
			return err
		}
		return fmt.Errorf("rebuild %s: %w", j.p.Name(), err)
	}
	return nil
}

type rebuildState struct {
	pos     eventstore.Position
	applied int64
	last    time.Time
	head    eventstore.Position
}

func (j *RebuildJob) run(ctx context.Context, report func(Progress)) error {
	name := j.p.Name()
	shadow := "ledger_rebuild_" + name
	retired := "ledger_retired_" + name
	var live string
	if err := j.pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&live); err != nil {
		return err
	}
	if err := j.createShadow(ctx, live, shadow, retired); err != nil {
		return err
	}
	searchPath := "SET LOCAL search_path TO " + pgx.Identifier{shadow}.Sanitize() + ", " + pgx.Identifier{live}.Sanitize()

	var st rebuildState
	phase := PhaseBuilding
	progress := func() {
		p := Progress{Phase: phase, Events: st.applied, Done: st.pos.Prepare, Total: max(st.head.Prepare, st.pos.Prepare), Elapsed: time.Since(j.start)}
		if report != nil {
			report(p)
		}
	}
	head, err := j.store.Head(ctx)
	if err != nil {
		return err
	}
	st.head = head
	// The next batches are read (and folded, see BatchApplier) while this
	// one is written.
	type read struct {
		evs  []eventstore.RecordedEvent
		fold <-chan fold // FoldBatch's answer, nil if p does not fold
		err  error
	}
	batch := rebuildBatch
	folder, _ := j.p.(BatchApplier)
	reads := make(chan read, 2)
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	go func() {
		defer close(reads)
		var pos eventstore.Position
		for {
			evs, err := j.store.ReadAll(readCtx, pos, batch)
			var f chan fold
			if err == nil && folder != nil && len(evs) > 0 {
				// Folded while the next batch is read.
				f = make(chan fold, 1)
				go func() { f <- foldSafely(folder, evs) }()
			}
			select {
			case reads <- read{evs, f, err}:
			case <-readCtx.Done():
				return
			}
			if err != nil || len(evs) < batch {
				return
			}
			pos = evs[len(evs)-1].Position
		}
	}()
	for r := range reads {
		if r.err != nil {
			return r.err
		}
		if len(r.evs) > 0 {
			var f fold
			if r.fold != nil {
				f = <-r.fold
			}
			if err := j.buildBatch(ctx, searchPath, phase, &st, r.evs, f); err != nil {
				return err
			}
			progress()
		}
		if !st.pos.Less(st.head) && phase == PhaseBuilding {
			phase = PhaseCatchingUp
			if st.head, err = j.store.Head(ctx); err != nil {
				return err
			}
		}
	}
	if err := j.finishShadow(ctx, shadow); err != nil {
		return err
	}
	// Fresh statistics before the swap, so that the first queries on the
	// new tables are planned on their real sizes.
	for _, t := range j.p.Tables() {
		if _, err := j.pool.Exec(ctx, "ANALYZE "+pgx.Identifier{shadow, t}.Sanitize()); err != nil {
			return err
		}
	}
	phase = PhaseSwapping
	// On the job's own connection: holding a pool connection while the
	// reads below borrow another could starve a small pool.
	err = pgx.BeginFunc(ctx, j.conn, func(tx pgx.Tx) error {
		if err := lock(ctx, tx, name); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, searchPath); err != nil {
			return err
		}
		// Under the lock no live batch moves p's tables; this transaction
		// holds back the log's xmin, so the reads below end, and whatever
		// they do not return comes after the checkpoint written here.
		for {
			evs, err := j.store.ReadAll(ctx, st.pos, batch)
			if err != nil {
				return err
			}
			if len(evs) == 0 {
				break
			}
			if err := j.applyAll(ctx, tx, &st, evs); err != nil {
				return err
			}
		}
		if _, err := readCheckpoint(ctx, tx, name); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{retired}.Sanitize()); err != nil {
			return err
		}
		for _, t := range j.p.Tables() {
			if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s SET SCHEMA %s", pgx.Identifier{live, t}.Sanitize(), pgx.Identifier{retired}.Sanitize())); err != nil {
				return fmt.Errorf("swap %s: %w", t, err)
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s SET SCHEMA %s", pgx.Identifier{shadow, t}.Sanitize(), pgx.Identifier{live}.Sanitize())); err != nil {
				return fmt.Errorf("swap %s: %w", t, err)
			}
		}
		for _, s := range []string{retired, shadow} {
			if _, err := tx.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{s}.Sanitize()+" CASCADE"); err != nil {
				return err
			}
		}
		if err := recordProgress(ctx, tx, name, phase, st); err != nil {
			return err
		}
		return writeCheckpoint(ctx, tx, name, st.pos, st.applied, st.last, 0)
	})
	if err != nil {
		return err
	}
	wakeLog(j.store)
	st.head = st.pos
	phase = PhaseDone
	progress()
	return nil
}

// buildBatch applies one batch to the shadow tables in a transaction of its
// own. The shadow is thrown away unless the swap commits, and the swap's
// commit is synchronous, so these commits need not wait for their flush.
// The batch is written as folded (BatchApplier) if the projection folds,
// else its statements are pipelined (pipeTx), until a batch diverges from
// what was assumed or does not fold; that batch is applied again statement
// by statement, and so are the rest of this rebuild's.
func (j *RebuildJob) buildBatch(ctx context.Context, searchPath, phase string, st *rebuildState, evs []eventstore.RecordedEvent, f fold) error {
	attempt := func(exact bool) (rebuildState, error) {
		next := *st
		err := pgx.BeginFunc(ctx, j.conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, searchPath+"; SET LOCAL synchronous_commit = off"); err != nil {
				return err
			}
			if exact {
				if err := j.applyAll(ctx, tx, &next, evs); err != nil {
					return err
				}
				return recordProgress(ctx, tx, j.p.Name(), phase, next)
			}
			pt := newPipeTx(tx)
			if _, ok := j.p.(BatchApplier); ok {
				if f.err != nil {
					return f.err
				}
				if err := f.write.run(ctx, pt); err != nil {
					return err
				}
				for _, ev := range evs {
					next.pos, next.last = ev.Position, ev.Metadata.OccurredAt
				}
				next.applied += int64(len(evs))
			} else if err := j.applyAll(ctx, pt, &next, evs); err != nil {
				return err
			}
			if err := pt.flush(ctx); err != nil {
				return err
			}
			return recordProgress(ctx, tx, j.p.Name(), phase, next)
		})
		return next, err
	}
	if !j.exact {
		next, err := attempt(false)
		if err == nil {
			*st = next
			wakeLog(j.store)
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		// Whatever went wrong, the statement-by-statement replay says
		// what really happens, errors included.
		j.exact = true
	}
	next, err := attempt(true)
	if err != nil {
		return err
	}
	*st = next
	wakeLog(j.store)
	return nil
}

// fold is what FoldBatch made of a batch.
type fold struct {
	write BatchWrite
	err   error
}

// foldSafely is applySafely for FoldBatch.
func foldSafely(b BatchApplier, evs []eventstore.RecordedEvent) (f fold) {
	f.err = unpanicked(func() (err error) {
		f.write, err = b.FoldBatch(evs)
		return err
	})
	return f
}

// run is applySafely for a BatchWrite.
func (w BatchWrite) run(ctx context.Context, tx pgx.Tx) error {
	return unpanicked(func() error { return w(ctx, tx) })
}

func (j *RebuildJob) applyAll(ctx context.Context, tx pgx.Tx, st *rebuildState, evs []eventstore.RecordedEvent) error {
	for _, ev := range evs {
		if err := applySafely(ctx, tx, j.p, ev); err != nil {
			return &ApplyError{Projection: j.p.Name(), Event: ev, Err: err}
		}
		st.pos, st.last = ev.Position, ev.Metadata.OccurredAt
		st.applied++
	}
	return nil
}

func recordProgress(ctx context.Context, tx pgx.Tx, name, phase string, st rebuildState) error {
	_, err := tx.Exec(ctx, `
		UPDATE projection_rebuilds SET phase = $2, events = $3, done_position = $4, total_position = $5, updated_at = now()
		WHERE name = $1`, name, phase, st.applied, int64(st.pos.Prepare), int64(max(st.head.Prepare, st.pos.Prepare)))
	return err
}

// createShadow makes an empty unlogged copy of each of p's tables in the
// shadow schema, with the live tables' columns, defaults, constraints and
// indexes under the live indexes' names, so that the tables swapped in are
// the ones the migrations made. The late indexes (LateIndexer) are dropped
// from the copy and their definitions kept for finishShadow. A shadow left
// by a rebuild that died is dropped first, whatever it holds.
func (j *RebuildJob) createShadow(ctx context.Context, live, shadow, retired string) error {
	return pgx.BeginFunc(ctx, j.pool, func(tx pgx.Tx) error {
		for _, s := range []string{shadow, retired} {
			if _, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{s}.Sanitize()+" CASCADE"); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{shadow}.Sanitize()); err != nil {
			return err
		}
		for _, t := range j.p.Tables() {
			_, err := tx.Exec(ctx, fmt.Sprintf("CREATE UNLOGGED TABLE %s (LIKE %s INCLUDING ALL)",
				pgx.Identifier{shadow, t}.Sanitize(), pgx.Identifier{live, t}.Sanitize()))
			if err != nil {
				return fmt.Errorf("shadow of %s: %w", t, err)
			}
			if err := renameIndexes(ctx, tx, live, shadow, t); err != nil {
				return err
			}
		}
		j.late = nil
		if li, ok := j.p.(LateIndexer); ok {
			for _, name := range li.LateIndexes() {
				var def string
				var unique bool
				err := tx.QueryRow(ctx, `
					SELECT pg_get_indexdef(i.indexrelid), i.indisunique OR i.indisprimary
					FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
					WHERE c.relnamespace = $1::regnamespace AND c.relname = $2`, shadow, name).Scan(&def, &unique)
				if err != nil {
					return fmt.Errorf("late index %s: %w", name, err)
				}
				if unique {
					return fmt.Errorf("late index %s is unique: applying needs it", name)
				}
				if _, err := tx.Exec(ctx, "DROP INDEX "+pgx.Identifier{shadow, name}.Sanitize()); err != nil {
					return err
				}
				j.late = append(j.late, def)
			}
		}
		return nil
	})
}

// finishShadow makes the filled shadow tables logged, so that they are
// durable from the swap on, and creates their late indexes. Made logged
// first: the rewrite that makes a table logged rebuilds its indexes, so an
// index created before it would be built twice. Each is one statement on
// the whole table (a few seconds for a million rows), outside the swap's
// lock: the live runner goes on meanwhile, though the log delivers nothing
// committed after such a statement began until it ends.
func (j *RebuildJob) finishShadow(ctx context.Context, shadow string) error {
	for _, t := range j.p.Tables() {
		if _, err := j.conn.Exec(ctx, "ALTER TABLE "+pgx.Identifier{shadow, t}.Sanitize()+" SET LOGGED"); err != nil {
			return fmt.Errorf("shadow of %s: %w", t, err)
		}
	}
	for _, def := range j.late {
		if _, err := j.conn.Exec(ctx, def); err != nil {
			return fmt.Errorf("shadow index: %w", err)
		}
	}
	return nil
}

// indexShape is an index definition without its name and table, to match
// each shadow index with the live one it copies.
var indexShape = regexp.MustCompile(`^CREATE (UNIQUE )?INDEX \S+ ON (ONLY )?\S+ `)

func renameIndexes(ctx context.Context, tx pgx.Tx, live, shadow, table string) error {
	defs := func(schema string) (map[string]string, []string, error) {
		rows, err := tx.Query(ctx, `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY indexname`, schema, table)
		if err != nil {
			return nil, nil, err
		}
		shapes := map[string]string{}
		var names []string
		for rows.Next() {
			var name, def string
			if err := rows.Scan(&name, &def); err != nil {
				return nil, nil, err
			}
			shapes[name] = indexShape.ReplaceAllString(def, "CREATE ${1}INDEX ON ")
			names = append(names, name)
		}
		return shapes, names, rows.Err()
	}
	liveShapes, liveNames, err := defs(live)
	if err != nil {
		return err
	}
	shadowShapes, shadowNames, err := defs(shadow)
	if err != nil {
		return err
	}
	if len(liveNames) != len(shadowNames) {
		return fmt.Errorf("shadow of %s has %d indexes, the table %d", table, len(shadowNames), len(liveNames))
	}
	// Two steps through temporary names, so that no rename collides with
	// a name still taken in the shadow schema.
	target := map[string]string{}
	used := map[string]bool{}
	for _, s := range shadowNames {
		for _, l := range liveNames {
			if !used[l] && liveShapes[l] == shadowShapes[s] {
				target[s], used[l] = l, true
				break
			}
		}
		if target[s] == "" {
			return fmt.Errorf("shadow of %s: no live index matches %s", table, shadowShapes[s])
		}
	}
	for i, s := range shadowNames {
		if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER INDEX %s RENAME TO %s", pgx.Identifier{shadow, s}.Sanitize(), pgx.Identifier{fmt.Sprintf("ledger_shadow_index_%d", i)}.Sanitize())); err != nil {
			return err
		}
	}
	for i, s := range shadowNames {
		if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER INDEX %s RENAME TO %s", pgx.Identifier{shadow, fmt.Sprintf("ledger_shadow_index_%d", i)}.Sanitize(), pgx.Identifier{target[s]}.Sanitize())); err != nil {
			return err
		}
	}
	return nil
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

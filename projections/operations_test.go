package projections_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

func indexNames(t *testing.T, e env, table string) []string {
	t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT indexname || ' ' || regexp_replace(indexdef, ' ON \S+', ' ON ') FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1 ORDER BY 1`, table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func TestRebuildSwapsInTablesShapedByTheMigrations(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r, _ := start(t, e, projections.Steps{}, projections.Accounts{})
	waitFor(t, r, register(t, e.store, 30))
	before := map[string][]string{}
	for _, table := range append(projections.Steps{}.Tables(), "accounts") {
		before[table] = indexNames(t, e, table)
	}
	for _, p := range []projections.Projection{projections.Steps{}, projections.Accounts{}} {
		if err := projections.Rebuild(ctx, e.pool, e.store, p, nil); err != nil {
			t.Fatal(err)
		}
	}
	for table, want := range before {
		if got := indexNames(t, e, table); !reflect.DeepEqual(got, want) {
			t.Fatalf("indexes of %s after a rebuild:\n%v\nwant\n%v", table, got, want)
		}
	}
	if n := count(t, e.pool, `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ledger\_%'`); n != 0 {
		t.Fatalf("%d shadow schemas left behind", n)
	}
}

func TestSecondRebuildIsRefusedWhileOneRuns(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r, _ := start(t, e, projections.Accounts{})
	waitFor(t, r, register(t, e.store, 10))

	job, err := projections.BeginRebuild(ctx, e.pool, e.store, projections.Accounts{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := projections.BeginRebuild(ctx, e.pool, e.store, projections.Accounts{}); !errors.Is(err, projections.ErrRebuildInProgress) {
		t.Fatalf("second rebuild: %v, want ErrRebuildInProgress", err)
	}
	st, err := projections.ListStatus(ctx, e.pool, e.store, []string{"accounts"})
	if err != nil {
		t.Fatal(err)
	}
	if st[0].State != projections.StateRebuilding || st[0].Rebuild == nil || !st[0].Rebuild.Running {
		t.Fatalf("status while a rebuild runs: %+v", st[0])
	}
	if err := job.Run(ctx, nil); err != nil {
		t.Fatal(err)
	}
	st, _ = projections.ListStatus(ctx, e.pool, e.store, []string{"accounts"})
	if st[0].State != projections.StateLive || st[0].Rebuild.Running || st[0].Rebuild.Phase != projections.PhaseDone || st[0].Rebuild.Events != 15 {
		t.Fatalf("status after the rebuild: %+v %+v", st[0], st[0].Rebuild)
	}
	// Done, the lock is free again.
	if err := projections.Rebuild(ctx, e.pool, e.store, projections.Accounts{}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestStatusShowsLagAndThroughput(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	register(t, e.store, 20) // 30 events, no runner yet
	// The log's head moves once no older transaction of the server runs.
	var st []projections.Status
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var err error
		if st, err = projections.ListStatus(ctx, e.pool, e.store, []string{"accounts"}); err != nil {
			t.Fatal(err)
		}
		if st[0].LagEvents == 30 || time.Now().After(deadline) {
			break
		}
	}
	if st[0].State != projections.StateCatchingUp || st[0].LagEvents != 30 || st[0].LagMs <= 0 {
		t.Fatalf("status of a projection that never ran: %+v", st[0])
	}
	r, _ := start(t, e, projections.Accounts{})
	waitFor(t, r, register(t, e.store, 200))
	st, _ = projections.ListStatus(ctx, e.pool, e.store, []string{"accounts"})
	if st[0].State != projections.StateLive || st[0].LagEvents != 0 || st[0].LagMs != 0 || st[0].EventsApplied != 330 {
		t.Fatalf("status of a live projection: %+v", st[0])
	}
	if st[0].EventsPerSecond <= 0 {
		t.Fatalf("no throughput after 330 events: %+v", st[0])
	}
}

// Two runners on one database: each projection runs on one of them, both
// see their commands' writes, and when the one running it stops the other
// takes over from the checkpoint.
func TestTwoInstancesShareTheProjections(t *testing.T) {
	e := newEnv(t)
	s := &seen{}
	a, stopA := start(t, e, projections.Accounts{}, s)
	waitFor(t, a, register(t, e.store, 20))
	b, _ := startWithLease(t, e, 50*time.Millisecond, projections.Accounts{}, s)
	time.Sleep(200 * time.Millisecond)
	if !a.Runs("accounts") || b.Runs("accounts") || b.Runs("seen") {
		t.Fatalf("leases: a runs accounts %v, b runs accounts %v, seen %v", a.Runs("accounts"), b.Runs("accounts"), b.Runs("seen"))
	}
	// b's commands settle on the checkpoints a writes.
	waitFor(t, b, register(t, e.store, 20))
	if n := count(t, e.pool, `SELECT count(*) FROM accounts`); n != 40 {
		t.Fatalf("b's wait returned with %d accounts, want 40", n)
	}
	stopA()
	deadline := time.Now().Add(5 * time.Second)
	for !b.Runs("accounts") || !b.Runs("seen") {
		if time.Now().After(deadline) {
			t.Fatal("b did not take over")
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, b, register(t, e.store, 20))
	total := count(t, e.pool, `SELECT count(*) FROM events`)
	if n := count(t, e.pool, `SELECT count(*) FROM seen`); n != total {
		t.Fatalf("seen %d events of %d", n, total)
	}
	if n := count(t, e.pool, `SELECT events_applied FROM projection_checkpoints WHERE name = 'seen'`); n != total {
		t.Fatalf("checkpoint counts %d events, log has %d", n, total)
	}
}

func startWithLease(t *testing.T, e env, interval time.Duration, ps ...projections.Projection) (*projections.Runner, context.CancelFunc) {
	t.Helper()
	r := projections.NewRunner(e.pool, e.store, nil, nil, ps...)
	r.RetryBackoff = 50 * time.Millisecond
	r.LeaseInterval = interval
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return r, stop
}

// counts decides on the rows an UPDATE touched: the pipelined rebuild must
// notice that its assumption (one row) was wrong and replay exactly.
type counts struct{}

func (counts) Name() string     { return "counts" }
func (counts) Tables() []string { return []string{"counts"} }
func (counts) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	tag, err := tx.Exec(ctx, `UPDATE counts SET n = n + 1 WHERE type = $1`, ev.Type)
	if err != nil || tag.RowsAffected() == 1 {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO counts VALUES ($1, 1)`, ev.Type)
	return err
}

func TestPipelinedRebuildReplaysWhatItGuessedWrong(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.pool.Exec(ctx, `CREATE TABLE counts (type text PRIMARY KEY, n int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	r, _ := start(t, e, counts{}, projections.Accounts{})
	waitFor(t, r, register(t, e.store, 3000)) // 4500 events: several rebuild batches
	want := map[string][]string{}
	for _, table := range []string{"counts", "accounts"} {
		want[table], _ = projections.Dump(ctx, e.pool, table)
	}
	for _, p := range []projections.Projection{counts{}, projections.Accounts{}} {
		if err := projections.Rebuild(ctx, e.pool, e.store, p, nil); err != nil {
			t.Fatal(err)
		}
	}
	for table, rows := range want {
		if got, _ := projections.Dump(ctx, e.pool, table); !reflect.DeepEqual(got, rows) {
			t.Fatalf("rebuilt %s:\n%v\nwant\n%v", table, got, rows)
		}
	}
}

func TestStatusGauges(t *testing.T) {
	e := newEnv(t)
	r, _ := start(t, e, projections.Accounts{})
	waitFor(t, r, register(t, e.store, 10))
	reg := prometheus.NewRegistry()
	reg.MustRegister(projections.NewStatusCollector(e.pool, e.store, []string{"accounts"}))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() == "state" {
					name += "{" + l.GetValue() + "}"
				}
			}
			got[name] = m.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"ledger_projection_lag_events": 0, "ledger_projection_lag_seconds": 0,
		"ledger_projection_state{live}": 1, "ledger_projection_state{stopped}": 0,
		"ledger_projection_state{catching_up}": 0, "ledger_projection_state{rebuilding}": 0,
	}
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", name, g, ok, v)
		}
	}
	if got["ledger_projection_position"] <= 0 {
		t.Errorf("position gauge %v", got["ledger_projection_position"])
	}
}

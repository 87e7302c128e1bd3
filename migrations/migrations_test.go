package migrations_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/migrations"
	"github.com/consentledger/ledger/migrations/dbtest"
)

func TestApplyIsIdempotentAndReachesLatest(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dbtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	// The test database is cloned from a migrated template: nothing is left.
	applied, err := migrations.Apply(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != 0 {
		t.Fatalf("second apply applied %v", applied)
	}
	v, err := migrations.Current(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if v != migrations.Latest() {
		t.Fatalf("version %d, want %d", v, migrations.Latest())
	}
}

func TestApplyOnEmptyDatabase(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dbtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	// Empty the schema, then migrate from nothing, twice concurrently.
	if _, err := pool.Exec(ctx, `DROP SCHEMA public CASCADE; CREATE SCHEMA public`); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for range 2 {
		go func() { _, err := migrations.Apply(ctx, pool); errs <- err }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	all, _ := migrations.All()
	if n != len(all) {
		t.Fatalf("%d rows in schema_migrations, want %d", n, len(all))
	}
	// The log refuses edits.
	if _, err := pool.Exec(ctx, `INSERT INTO events (stream_id, revision, event_id, type, data, metadata) VALUES ('s', 0, gen_random_uuid(), 't', '{}', '{}')`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE events SET type = 'x'`); err == nil {
		t.Fatal("update of the event log succeeded")
	}
	if _, err := pool.Exec(ctx, `DELETE FROM events`); err == nil {
		t.Fatal("delete from the event log succeeded")
	}
}

package eventstore_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/eventstore/storetest"
	"github.com/consentledger/ledger/migrations"
	"github.com/consentledger/ledger/migrations/dbtest"
)

// TestChainBackfillOfExistingRows: the SQL of migration 0013 chains rows
// written before it exactly as appends chain them, so a migrated log
// verifies from its first event.
func TestChainBackfillOfExistingRows(t *testing.T) {
	ctx := context.Background()
	pg := openPostgres(t, dbtest.URL(t))
	pool := pgPool(t, pg)
	for i, body := range []string{`{"b": 1, "a": [1.50, "Zoë"]}`, `{}`, `{"n": 1e2}`} {
		ev := storetest.Event("backfill.v1", i)
		ev.Data = json.RawMessage(body)
		if _, err := pg.Append(ctx, "test-backfill", eventstore.Any, ev); err != nil {
			t.Fatal(err)
		}
	}
	// Rows as a log before the migration holds them: no hashes.
	if _, err := pool.Exec(ctx, `INSERT INTO events (stream_id, revision, event_id, type, data, metadata)
		VALUES ('test-old', 0, gen_random_uuid(), 'old.v1', '{"x": "y"}', '{"actor": "a", "occurredAt": "2020-01-02T03:04:05Z"}'),
		       ('test-old', 1, gen_random_uuid(), 'old.v1', '{}', '{}')`); err != nil {
		t.Fatal(err)
	}
	var backfill string
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		if m.Version == 13 {
			from := strings.Index(m.SQL, "ALTER TABLE events DISABLE TRIGGER")
			to := strings.Index(m.SQL, "ALTER TABLE events ENABLE TRIGGER events_no_update;")
			backfill = m.SQL[from:to] + "ALTER TABLE events ENABLE TRIGGER events_no_update;"
		}
	}
	if backfill == "" {
		t.Fatal("no backfill in migration 13")
	}
	before := storetestRead(t, pg, "test-backfill")
	if _, err := pool.Exec(ctx, backfill); err != nil {
		t.Fatal(err)
	}
	after := storetestRead(t, pg, "test-backfill")
	for i := range before {
		if string(before[i].Hash) != string(after[i].Hash) {
			t.Fatalf("the backfill hashed event %d otherwise than its append", i)
		}
	}
	storetest.CheckChain(t, after)
	storetest.CheckChain(t, storetestRead(t, pg, "test-old"))
	// Tailing reads see a commit once older transactions of the server
	// ended: wait for all five.
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := eventstore.VerifyLog(ctx, pg, nil)
		if err == nil && r.Valid && r.Checked == 5 {
			break
		}
		if time.Now().After(deadline) || err != nil || !r.Valid {
			t.Fatalf("the whole log after the backfill: %+v %v", r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func storetestRead(t *testing.T, s eventstore.Store, stream string) []eventstore.RecordedEvent {
	t.Helper()
	evs, err := eventstore.ReadWholeStream(context.Background(), s, stream)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/enrollment"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/eventstore/esdbtest"
	"github.com/consentledger/ledger/migrations/dbtest"
	"github.com/consentledger/ledger/projections"
)

// cli runs the ledger command in this process with the environment the
// test set, and returns what it printed.
func cli(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	errOut := &lockedBuffer{} // the EventStoreDB client logs from its own goroutines
	err = run(ctx, args, &out, errOut)
	return out.String(), errOut.String(), err
}

// fillLog writes accounts and enrollments to the PostgreSQL log at dbURL
// and returns how many events it appended.
func fillLog(t *testing.T, dbURL string, accounts int) int {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store, err := eventstore.OpenPostgres(ctx, pool, eventstore.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	at := time.Date(2026, 4, 5, 6, 7, 8, 987654321, time.UTC)
	ev := func(typ string, payload any) eventstore.EventData {
		data, err := json.Marshal(payload)
		if err != nil {
			t.Fatal(err)
		}
		at = at.Add(1234 * time.Millisecond)
		return eventstore.EventData{ID: uuid.New(), Type: typ, Data: data, Metadata: eventstore.Metadata{
			CorrelationID: uuid.NewString(), Actor: "test", OccurredAt: at,
		}}
	}
	n := 0
	var last eventstore.Position
	appendTo := func(stream string, exp eventstore.ExpectedRevision, evs ...eventstore.EventData) {
		res, err := store.Append(ctx, stream, exp, evs...)
		if err != nil {
			t.Fatal(err)
		}
		n += len(evs)
		last = res.Position
	}
	for i := range accounts {
		id := uuid.New()
		email := fmt.Sprintf("u%d@example.com", i)
		appendTo(account.Stream(id), eventstore.NoStream, ev(account.TypeRegistered, account.Registered{AccountID: id, Email: email}))
		if i%3 != 0 {
			appendTo(account.Stream(id), eventstore.Exact(0), ev(account.TypeActivated, account.Activated{AccountID: id}))
			appendTo(enrollment.Stream(id), eventstore.NoStream,
				ev(enrollment.TypePhoneRegistered, enrollment.PhoneRegistered{Phone: fmt.Sprintf("06%08d", i), Via: "addPhoneNumber"}),
				ev(enrollment.TypePinSet, enrollment.PinSet{PinHash: "x", Reason: "enroll", DeviceID: "phone"}),
				ev(enrollment.TypeDeviceEnrolled, enrollment.DeviceEnrolled{DeviceID: "phone"}))
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		head, err := store.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !head.Less(last) {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("head %v never reached %v", head, last)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readModels dumps every table of every projection, by table.
func readModels(t *testing.T, dbURL string) map[string][]string {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	out := map[string][]string{}
	for _, p := range allProjections() {
		for _, table := range p.Tables() {
			rows, err := projections.Dump(context.Background(), pool, table)
			if err != nil {
				t.Fatal(err)
			}
			out[table] = withoutPositions(t, rows)
		}
	}
	return out
}

// withoutPositions drops the columns that hold log positions, which are
// each log's own (commit_position, first_prepare, …), and sorts again.
func withoutPositions(t *testing.T, rows []string) []string {
	t.Helper()
	out := make([]string, len(rows))
	for i, r := range rows {
		var m map[string]any
		if err := json.Unmarshal([]byte(r), &m); err != nil {
			t.Fatal(err)
		}
		for k := range m {
			if strings.HasSuffix(k, "_commit") || strings.HasSuffix(k, "_prepare") || k == "commit_position" || k == "prepare_position" {
				delete(m, k)
			}
		}
		b, _ := json.Marshal(m)
		out[i] = string(b)
	}
	sort.Strings(out)
	return out
}

// TestEventstoreCopyThenRebuild moves an installation from the PostgreSQL
// log to EventStoreDB the way the README says, and finds the same read
// models at the end.
func TestEventstoreCopyThenRebuild(t *testing.T) {
	dbURL := dbtest.URL(t)
	t.Setenv("LEDGER_DATABASE_URL", dbURL)
	t.Setenv("LEDGER_EVENTSTORE_URL", "")
	t.Setenv("LEDGER_DEV", "true")
	t.Setenv("LEDGER_LOG_LEVEL", "warn")
	events := fillLog(t, dbURL, 40)

	if _, stderr, err := cli(t, "projections", "rebuild", "--all"); err != nil {
		t.Fatalf("rebuild from the PostgreSQL log: %v\n%s", err, stderr)
	}
	before := readModels(t, dbURL)
	if len(before["accounts"]) != 40 || len(before["enrollment_devices"]) == 0 {
		t.Fatalf("read models from the PostgreSQL log: %d accounts, %d devices", len(before["accounts"]), len(before["enrollment_devices"]))
	}

	srv := esdbtest.Start(t)
	for _, bad := range [][]string{
		{"eventstore", "copy"},
		{"eventstore", "copy", "--to", "http://" + srv.Addr()},
		{"eventstore", "copy", "--to", srv.URL(), "extra"},
	} {
		if _, _, err := cli(t, bad...); err == nil {
			t.Fatalf("%q succeeded", bad)
		}
	}
	if srv.Head() != 0 {
		t.Fatal("a refused command wrote to EventStoreDB")
	}

	stdout, stderr, err := cli(t, "eventstore", "copy", "--to", srv.URL())
	if err != nil {
		t.Fatalf("copy: %v\n%s", err, stderr)
	}
	if want := fmt.Sprintf("copied %d events to %s", events, srv.URL()); !strings.Contains(stdout, want) {
		t.Fatalf("copy printed %q, want %q", stdout, want)
	}
	if !strings.Contains(stderr, fmt.Sprintf("copy: %d events in", events)) {
		t.Fatalf("no progress summary in %q", stderr)
	}
	head := srv.Head()

	// Again: recognised as a resumption, and nothing is written twice.
	stdout, stderr, err = cli(t, "eventstore", "copy", "--to="+srv.URL())
	if err != nil {
		t.Fatalf("second copy: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "resuming") || !strings.Contains(stdout, fmt.Sprintf("copied %d events", events)) {
		t.Fatalf("second copy printed %q and %q", stdout, stderr)
	}
	if srv.Head() != head {
		t.Fatalf("the second copy wrote %d records", srv.Head()-head)
	}

	// An EventStoreDB that holds another ledger's events is refused.
	other := esdbtest.Start(t)
	func() {
		ctx := context.Background()
		s, err := eventstore.OpenESDB(ctx, other.URL(), eventstore.ESDBOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		id := uuid.New()
		data, _ := json.Marshal(account.Registered{AccountID: id, Email: "someone@example.com"})
		if _, err := s.Append(ctx, account.Stream(id), eventstore.NoStream, eventstore.EventData{ID: uuid.New(), Type: account.TypeRegistered, Data: data}); err != nil {
			t.Fatal(err)
		}
	}()
	if _, _, err := cli(t, "eventstore", "copy", "--to", other.URL()); err == nil || !strings.Contains(err.Error(), "not a copy of this log") {
		t.Fatalf("copy into another ledger's EventStoreDB: %v", err)
	}
	if other.Head() != 1 {
		t.Fatalf("the refused copy wrote %d records", other.Head()-1)
	}

	// Switch, rebuild, compare.
	t.Setenv("LEDGER_EVENTSTORE_URL", srv.URL())
	if _, stderr, err := cli(t, "projections", "rebuild", "--all"); err != nil {
		t.Fatalf("rebuild from EventStoreDB: %v\n%s", err, stderr)
	}
	after := readModels(t, dbURL)
	for table, want := range before {
		got := after[table]
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s differs after the move:\nfrom EventStoreDB %d rows\nfrom PostgreSQL   %d rows", table, len(got), len(want))
		}
	}
	if _, _, err := cli(t, "eventstore", "copy", "--to", srv.URL()); err == nil {
		t.Fatal("copied EventStoreDB onto itself")
	}
}

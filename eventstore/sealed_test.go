package eventstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/migrations/dbtest"
)

// personal marks "email" of "t.person.v1" as personal data of "accountId".
type personal struct{}

func (personal) Fields(t string) []string {
	if t == "t.person.v1" {
		return []string{"email"}
	}
	return nil
}

func (personal) Subject(_ string, data json.RawMessage) (uuid.UUID, bool) {
	var p struct {
		AccountID uuid.UUID `json:"accountId"`
	}
	return p.AccountID, json.Unmarshal(data, &p) == nil && p.AccountID != uuid.Nil
}

func TestSealedLogStoresPersonalDataEncryptedAndShredsIt(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.Pool(t)
	inner, err := eventstore.OpenPostgres(ctx, pool, eventstore.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inner.Close() })
	master := make([]byte, 32)
	keys, err := eventstore.NewKeyring(pool, master)
	if err != nil {
		t.Fatal(err)
	}
	s := eventstore.Seal(inner, keys, personal{})
	alice, bob := uuid.New(), uuid.New()
	ev := func(id uuid.UUID, email string) eventstore.EventData {
		data, _ := json.Marshal(map[string]any{"accountId": id, "email": email, "plan": "basic"})
		return eventstore.EventData{ID: uuid.New(), Type: "t.person.v1", Data: data, Metadata: eventstore.Metadata{OccurredAt: time.Now()}}
	}
	if _, err := s.Append(ctx, "person-a", eventstore.NoStream, ev(alice, "alice@example.com")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "person-b", eventstore.NoStream, ev(bob, "bob@example.com")); err != nil {
		t.Fatal(err)
	}

	var stored string
	if err := pool.QueryRow(ctx, `SELECT string_agg(data::text, ' ') FROM events`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stored, "@example.com") || !strings.Contains(stored, "pii:v1:") {
		t.Fatalf("stored in clear: %s", stored)
	}
	read := func(stream string) map[string]any {
		t.Helper()
		evs, err := s.ReadStream(ctx, stream, eventstore.ReadStreamOptions{})
		if err != nil || len(evs) != 1 {
			t.Fatalf("read %s: %v %v", stream, evs, err)
		}
		var m map[string]any
		_ = json.Unmarshal(evs[0].Data, &m)
		return m
	}
	if m := read("person-a"); m["email"] != "alice@example.com" || m["plan"] != "basic" {
		t.Fatalf("opened: %v", m)
	}
	raw, _ := inner.ReadStream(ctx, "person-a", eventstore.ReadStreamOptions{})
	if strings.Contains(string(raw[0].Data), "alice") {
		t.Fatal("the inner store returned clear data")
	}

	if err := keys.Destroy(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if m := read("person-a"); m["email"] != nil || m["plan"] != "basic" || m["accountId"] != alice.String() {
		t.Fatalf("after erasure: %v", m)
	}
	if m := read("person-b"); m["email"] != "bob@example.com" {
		t.Fatalf("bob's data went with alice's key: %v", m)
	}
	// A fresh keyring (another process) reads the same: the key is gone
	// from the table, not only from the cache.
	other, _ := eventstore.NewKeyring(pool, master)
	// $all shows an append once no older transaction of the server can still
	// commit: other databases' transactions may hold it back a moment.
	var all []eventstore.RecordedEvent
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		all, err = eventstore.Seal(inner, other, personal{}).ReadAll(ctx, eventstore.Start, 10)
		if err != nil || len(all) >= 2 || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || len(all) != 2 || strings.Contains(string(all[0].Data), "alice") || !strings.Contains(string(all[1].Data), "bob@") {
		t.Fatalf("another keyring: %v %v", all, err)
	}
	if _, err := s.Append(ctx, "person-a", eventstore.Any, ev(alice, "alice@example.com")); !errors.Is(err, eventstore.ErrSubjectErased) {
		t.Fatalf("writing for an erased subject: %v", err)
	}
	// A sealed value copied into another subject's event does not open.
	var tampered string
	_ = pool.QueryRow(ctx, `SELECT data->>'email' FROM events WHERE stream_id = 'person-b'`).Scan(&tampered)
	carol := uuid.New()
	if _, err := s.Append(ctx, "person-c0", eventstore.NoStream, ev(carol, "carol@example.com")); err != nil {
		t.Fatal(err)
	}
	copied, _ := json.Marshal(map[string]any{"accountId": carol, "email": tampered})
	if _, err := inner.Append(ctx, "person-c", eventstore.NoStream, eventstore.EventData{ID: uuid.New(), Type: "t.person.v1", Data: copied}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadStream(ctx, "person-c", eventstore.ReadStreamOptions{}); err == nil {
		t.Fatal("a value sealed for bob opened as carol's")
	}
	wrong, _ := eventstore.NewKeyring(pool, append(make([]byte, 31), 1))
	if _, err := eventstore.Seal(inner, wrong, personal{}).ReadStream(ctx, "person-b", eventstore.ReadStreamOptions{}); err == nil {
		t.Fatal("a wrong master key opened bob's key")
	}
}

// postgresLog opens the PostgreSQL log on a fresh database.
func postgresLog(t *testing.T) (*pgxpool.Pool, *eventstore.Postgres) {
	t.Helper()
	pool := dbtest.Pool(t)
	inner, err := eventstore.OpenPostgres(context.Background(), pool, eventstore.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inner.Close() })
	return pool, inner
}

// emailOf reads the "email" of the one event of stream through s.
func emailOf(t *testing.T, s *eventstore.Sealed, stream string) any {
	t.Helper()
	evs, err := s.ReadStream(context.Background(), stream, eventstore.ReadStreamOptions{})
	if err != nil || len(evs) != 1 {
		t.Fatalf("read %s: %v %v", stream, evs, err)
	}
	var m map[string]any
	_ = json.Unmarshal(evs[0].Data, &m)
	return m["email"]
}

// Two processes on one database each cache the subject's key. Destroy in
// one leaves the other's copy opening the data until that one forgets the
// key (what applying account.erased.v1 does in ledger serve); from then on
// it opens nothing and seals nothing for the subject.
func TestForgetStopsAKeyCachedByAnotherProcess(t *testing.T) {
	ctx := context.Background()
	pool, inner := postgresLog(t)
	master := make([]byte, 32)
	keysA, _ := eventstore.NewKeyring(pool, master)
	keysB, _ := eventstore.NewKeyring(pool, master)
	a, b := eventstore.Seal(inner, keysA, personal{}), eventstore.Seal(inner, keysB, personal{})
	alice := uuid.New()
	ev := func() eventstore.EventData {
		data, _ := json.Marshal(map[string]any{"accountId": alice, "email": "alice@example.com"})
		return eventstore.EventData{ID: uuid.New(), Type: "t.person.v1", Data: data, Metadata: eventstore.Metadata{OccurredAt: time.Now()}}
	}
	if _, err := a.Append(ctx, "person-a", eventstore.NoStream, ev()); err != nil {
		t.Fatal(err)
	}
	email := func(s *eventstore.Sealed) any { t.Helper(); return emailOf(t, s, "person-a") }
	if email(b) != "alice@example.com" {
		t.Fatal("B does not open alice's data")
	}
	if err := keysA.Destroy(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if email(a) != nil {
		t.Fatal("A opens alice's data after destroying her key")
	}
	if email(b) != "alice@example.com" {
		t.Fatal("B's cache was expected to still hold the key (the case Forget is for)")
	}
	keysB.Forget(alice)
	keysB.Forget(alice) // idempotent
	if v := email(b); v != nil {
		t.Fatalf("B opens alice's data after forgetting her key: %v", v)
	}
	if _, err := b.Append(ctx, "person-a", eventstore.Any, ev()); !errors.Is(err, eventstore.ErrSubjectErased) {
		t.Fatalf("B sealing for a forgotten subject: %v", err)
	}
	// Forget also holds where the key is still in the table (the erasing
	// instance destroys it just after the erasure is in the log).
	bob := uuid.New()
	keysB.Forget(bob)
	data, _ := json.Marshal(map[string]any{"accountId": bob, "email": "bob@example.com"})
	if _, err := b.Append(ctx, "person-b", eventstore.NoStream, eventstore.EventData{ID: uuid.New(), Type: "t.person.v1", Data: data}); !errors.Is(err, eventstore.ErrSubjectErased) {
		t.Fatalf("B sealing for a subject it forgot: %v", err)
	}
}

// The wrappers ledger serve puts around the log (metrics around the sealed
// store) hide neither the sealed store, its keyring nor the innermost log.
func TestWrappedLogsUnwrap(t *testing.T) {
	pool, inner := postgresLog(t)
	keys, _ := eventstore.NewKeyring(pool, make([]byte, 32))
	sealed := eventstore.Seal(inner, keys, personal{})
	served := eventstore.Instrument(sealed, "postgres", prometheus.NewRegistry())

	if s, ok := eventstore.As[*eventstore.Sealed](served); !ok || s != sealed {
		t.Fatalf("As[*Sealed](instrumented) = %v, %v", s, ok)
	}
	if k, ok := eventstore.KeyringOf(served); !ok || k != keys {
		t.Fatalf("KeyringOf(instrumented) = %v, %v", k, ok)
	}
	if pg, ok := eventstore.As[*eventstore.Postgres](served); !ok || pg != inner {
		t.Fatalf("As[*Postgres](instrumented) = %v, %v", pg, ok)
	}
	if raw := eventstore.Raw(served); raw != eventstore.Store(inner) {
		t.Fatalf("Raw(instrumented) = %T", raw)
	}
	if _, ok := eventstore.As[*eventstore.Sealed](eventstore.Instrument(inner, "postgres", prometheus.NewRegistry())); ok {
		t.Fatal("As[*Sealed] found a sealed store in an unsealed log")
	}
	if _, ok := eventstore.KeyringOf(inner); ok {
		t.Fatal("KeyringOf found a keyring in an unsealed log")
	}
}

// A keyring told that its process is not current (ledger serve: the token
// model fell behind the log) reads a cached key again before using it, so
// it sees a destruction it has not been told of; once current again it
// keeps what it read.
func TestKeyringNotCurrentReadsKeysAgain(t *testing.T) {
	ctx := context.Background()
	pool, inner := postgresLog(t)
	keysA, _ := eventstore.NewKeyring(pool, make([]byte, 32))
	keysB, _ := eventstore.NewKeyring(pool, make([]byte, 32))
	current := true
	keysB.Current = func() bool { return current }
	b := eventstore.Seal(inner, keysB, personal{})
	alice := uuid.New()
	data, _ := json.Marshal(map[string]any{"accountId": alice, "email": "alice@example.com"})
	if _, err := b.Append(ctx, "person-a", eventstore.NoStream, eventstore.EventData{ID: uuid.New(), Type: "t.person.v1", Data: data}); err != nil {
		t.Fatal(err)
	}
	email := func() any { t.Helper(); return emailOf(t, b, "person-a") }
	if email() != "alice@example.com" {
		t.Fatal("B does not open alice's data")
	}
	if err := keysA.Destroy(ctx, alice); err != nil {
		t.Fatal(err)
	}
	current = false
	if v := email(); v != nil {
		t.Fatalf("B, not current, opened alice's data with its cached key: %v", v)
	}
	current = true
	if v := email(); v != nil {
		t.Fatalf("B, current again, opened alice's data: %v", v)
	}
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/migrations/dbtest"
	"github.com/consentledger/ledger/projections/projectiontest"
)

// signUpLoad is a client that signs up accounts from several workers, each
// sign-up with its own Idempotency-Key, and retries a sign-up with the same
// key and body until it is acknowledged: through connection errors, 5xx
// answers and a key still held by a request the server lost. That is what
// a well-behaved client does, and what lets the ledger promise that a
// retried command is executed once.
type signUpLoad struct {
	url     string
	prefix  string
	stopped atomic.Bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	acked   map[string]string // email → account id
	sent    map[string]bool   // every email sent at least once
	retries atomic.Int64
	failure atomic.Value // string: an answer no retry can fix
}

func startSignUpLoad(url, prefix string, workers int) *signUpLoad {
	l := &signUpLoad{url: url, prefix: prefix, acked: map[string]string{}, sent: map[string]bool{}}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			client := &http.Client{Timeout: 15 * time.Second}
			for i := 0; !l.stopped.Load(); i++ {
				l.signUp(client, fmt.Sprintf("%s-%d-%d@example.com", l.prefix, w, i), 2*time.Minute)
			}
		}()
	}
	return l
}

// signUp sends one sign-up until it is acknowledged or until give up.
func (l *signUpLoad) signUp(client *http.Client, email string, giveUp time.Duration) {
	key := "signup-" + email
	body := fmt.Sprintf(`{"email":%q,"password":"Correct-Horse-9"}`, email)
	l.mu.Lock()
	l.sent[email] = true
	l.mu.Unlock()
	deadline := time.Now().Add(giveUp)
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		if attempt > 0 {
			l.retries.Add(1)
			time.Sleep(100 * time.Millisecond)
		}
		req, _ := http.NewRequest("POST", l.url+"/v1/accounts", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := client.Do(req)
		if err != nil {
			continue // the server or its database is away: retry
		}
		var out struct {
			AccountID string `json:"accountId"`
			Code      string `json:"code"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusCreated:
			l.mu.Lock()
			l.acked[email] = out.AccountID
			l.mu.Unlock()
			return
		case resp.StatusCode >= 500, resp.StatusCode == http.StatusConflict && out.Code == "idempotency_key_in_progress":
			continue
		default:
			l.failure.CompareAndSwap(nil, fmt.Sprintf("sign-up %s: HTTP %d %s", email, resp.StatusCode, out.Code))
			return
		}
	}
	l.failure.CompareAndSwap(nil, fmt.Sprintf("sign-up %s not acknowledged within %s", email, giveUp))
}

func (l *signUpLoad) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// waitAcked waits until n more sign-ups than now are acknowledged.
func (l *signUpLoad) waitAcked(t *testing.T, n int, within time.Duration) {
	t.Helper()
	want := l.ackedCount() + n
	deadline := time.Now().Add(within)
	for l.ackedCount() < want {
		if f, _ := l.failure.Load().(string); f != "" {
			t.Fatal(f)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sign-ups acknowledged, want %d within %s", l.ackedCount(), want, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the load and waits for the sign-ups in flight.
func (l *signUpLoad) stop(t *testing.T) {
	t.Helper()
	l.stopped.Store(true)
	l.wg.Wait()
	if f, _ := l.failure.Load().(string); f != "" {
		t.Fatal(f)
	}
}

// checkExactlyOnce checks the log: every sign-up the load sent was
// acknowledged; each acknowledged account is registered exactly once; the
// reservation of each address names the account the ledger answered with;
// and the log registers no account beyond those and the others accounts
// the test appended itself (addresses are sealed in the log, so the check
// goes by streams).
func (l *signUpLoad) checkExactlyOnce(t *testing.T, pool *pgxpool.Pool, others int) {
	t.Helper()
	ctx := context.Background()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.acked) != len(l.sent) {
		t.Fatalf("%d sign-ups sent, %d acknowledged", len(l.sent), len(l.acked))
	}
	for email, id := range l.acked {
		var registered int
		var reservedFor *string
		err := pool.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM events WHERE stream_id = 'account-' || $1::text AND type = $2),
			       (SELECT data->>'accountId' FROM events WHERE stream_id = $3 AND type = $4 ORDER BY revision DESC LIMIT 1)`,
			id, account.TypeRegistered, account.EmailStream(email), account.TypeEmailReserved).Scan(&registered, &reservedFor)
		if err != nil {
			t.Fatal(err)
		}
		if registered != 1 || reservedFor == nil || *reservedFor != id {
			t.Fatalf("acknowledged sign-up %s (account %s): registered %d times, address reserved for %v", email, id, registered, reservedFor)
		}
	}
	var total int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = $1`, account.TypeRegistered).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total != len(l.acked)+others {
		t.Fatalf("the log registers %d accounts: %d acknowledged sign-ups and %d appended by the test", total, len(l.acked), others)
	}
}

// TestPostgresRestartUnderWriteLoad restarts the database (immediate mode:
// a crash, recovered from the WAL) under a load of sign-ups through a real
// `ledger serve`. The server reconnects by itself; every sign-up is
// acknowledged once the client has retried it with its Idempotency-Key,
// each is in the log exactly once, and the read models equal a rebuild.
func TestPostgresRestartUnderWriteLoad(t *testing.T) {
	cluster := startPGCluster(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, cluster.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `CREATE DATABASE ledger`); err != nil {
		t.Fatal(err)
	}
	admin.Close(ctx)
	dbURL := cluster.URL("ledger")
	bin := buildLedger(t)
	p := startServe(t, bin, dbURL, freeAddr(t))

	load := startSignUpLoad(p.url, "restart", 4)
	load.waitAcked(t, 30, time.Minute)
	for _, mode := range []string{"immediate", "fast"} {
		t.Logf("%d sign-ups acknowledged; restarting the database (%s)", load.ackedCount(), mode)
		cluster.Restart(mode)
		load.waitAcked(t, 30, 2*time.Minute)
	}
	load.stop(t)
	if p.cmd.ProcessState != nil {
		t.Fatalf("serve exited: %s\n%s", p.cmd.ProcessState, p.stdout)
	}

	pool, store := openLog(t, dbURL)
	load.checkExactlyOnce(t, pool, 0)
	projectiontest.AgreeWithRebuild(t, pool, store, time.Minute, allProjections()...)
	t.Logf("%d sign-ups across two restarts of the database, %d retries", load.ackedCount(), load.retries.Load())
}

// TestKill9DuringCommandsAndAProjectionBatch kills `ledger serve` with
// SIGKILL while sign-ups are in flight and while the projections work
// through a backlog of a few thousand events, starts it again and checks
// that every sign-up (retried with its Idempotency-Key after the restart)
// is in the log exactly once and that the read models equal a rebuild.
func TestKill9DuringCommandsAndAProjectionBatch(t *testing.T) {
	bin := buildLedger(t)
	dbURL := dbtest.URL(t)
	addr := freeAddr(t)
	p := startServe(t, bin, dbURL, addr)
	pool, store := openLog(t, dbURL)

	load := startSignUpLoad(p.url, "kill", 2)
	load.waitAcked(t, 10, time.Minute)
	// A backlog the projections apply in batches of up to 500 events,
	// appended straight to the log while the server runs.
	appended := make(chan struct{})
	var half sync.WaitGroup
	half.Add(1)
	const backlog = 3000
	go func() { defer close(appended); appendAccounts(t, store, backlog, half.Done) }()
	half.Wait()
	// Kill while the accounts projection is behind the log, in a batch.
	var at, head eventstore.Position
	deadline := time.Now().Add(30 * time.Second)
	for {
		var commit, prepare int64
		_ = pool.QueryRow(context.Background(), `SELECT commit_position, prepare_position FROM projection_checkpoints WHERE name = 'accounts'`).Scan(&commit, &prepare)
		at = eventstore.Position{Commit: uint64(commit), Prepare: uint64(prepare)}
		head, _ = store.Head(context.Background())
		if at.Less(head) || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = p.cmd.Process.Wait()
	if !at.Less(head) {
		t.Fatalf("the accounts projection kept up with the backlog: nothing was in a batch at the kill")
	}
	t.Logf("killed with the accounts projection at %s, the log at %s", at, head)
	<-appended

	startServe(t, bin, dbURL, addr)
	load.waitAcked(t, 10, 2*time.Minute)
	load.stop(t)
	load.checkExactlyOnce(t, pool, backlog)
	projectiontest.AgreeWithRebuild(t, pool, store, time.Minute, allProjections()...)
	t.Logf("%d sign-ups across a kill -9, %d retries", load.ackedCount(), load.retries.Load())
}

// openLog opens the database and its event log as `ledger serve` does.
func openLog(t *testing.T, dbURL string) (*pgxpool.Pool, eventstore.Store) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	pg, err := eventstore.OpenPostgres(context.Background(), pool, eventstore.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })
	// As serve opens it: personal data sealed with the subjects' keys.
	store, err := sealStore(config{Dev: true}, pool, pg)
	if err != nil {
		t.Fatal(err)
	}
	return pool, store
}

// appendAccounts appends n registered and activated accounts straight to
// the log, from 8 writers; it calls halfway once half of them are in.
func appendAccounts(t *testing.T, store eventstore.Store, n int, halfway func()) {
	t.Helper()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ev := func(typ string, payload any) eventstore.EventData {
		data, _ := json.Marshal(payload)
		return eventstore.EventData{ID: uuid.New(), Type: typ, Data: data, Metadata: eventstore.Metadata{Actor: "test", OccurredAt: at}}
	}
	var wg sync.WaitGroup
	var done atomic.Int64
	var once sync.Once
	defer once.Do(halfway)
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				id := uuid.New()
				_, err := store.Append(context.Background(), account.Stream(id), eventstore.NoStream,
					ev(account.TypeRegistered, account.Registered{AccountID: id, Email: fmt.Sprintf("backlog-%d@example.com", i)}),
					ev(account.TypeActivated, account.Activated{AccountID: id}))
				if err != nil {
					errs <- err
					return
				}
				if done.Add(1) == int64(n/2) {
					once.Do(halfway)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Error(err) // t.Fatal is for the test's goroutine
	}
}

package projections_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"reflect"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

// dyingAccounts is the accounts projection in a process that exits, without
// running any deferred cleanup, on its after-th event.
type dyingAccounts struct {
	after int64
	n     atomic.Int64
}

func (*dyingAccounts) Name() string          { return "accounts" }
func (*dyingAccounts) Tables() []string      { return projections.Accounts{}.Tables() }
func (*dyingAccounts) LateIndexes() []string { return projections.Accounts{}.LateIndexes() }
func (d *dyingAccounts) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	if d.n.Add(1) == d.after {
		os.Exit(3)
	}
	return projections.Accounts{}.Apply(ctx, tx, ev)
}

const dyingRebuildEnv = "LEDGER_TEST_DYING_REBUILD"

// TestRebuildAfterOneThatDiedStartsOver kills a rebuild's process in its
// third batch: two batches are committed in the unlogged shadow tables, the
// rebuild is recorded as building, nothing cleaned up. The next rebuild
// starts over from position 0 and swaps in tables equal to the live ones,
// logged, with every index, and leaves no shadow behind.
func TestRebuildAfterOneThatDiedStartsOver(t *testing.T) {
	if url := os.Getenv(dyingRebuildEnv); url != "" {
		ctx := context.Background()
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		store, err := eventstore.OpenPostgres(ctx, pool, eventstore.PostgresOptions{BatchSize: 200})
		if err != nil {
			t.Fatal(err)
		}
		defer projections.SetRebuildBatch(20)()
		err = projections.Rebuild(ctx, pool, store, &dyingAccounts{after: 50}, nil)
		t.Fatalf("the rebuild ended (%v) instead of dying", err)
	}
	e := newEnv(t)
	ctx := context.Background()
	r, _ := start(t, e, projections.Accounts{})
	waitFor(t, r, register(t, e.store, 60)) // 90 events
	want, err := projections.Dump(ctx, e.pool, "accounts")
	if err != nil {
		t.Fatal(err)
	}
	indexes := indexNames(t, e, "accounts")

	cmd := exec.Command(os.Args[0], "-test.run=^TestRebuildAfterOneThatDiedStartsOver$", "-test.count=1")
	cmd.Env = append(os.Environ(), dyingRebuildEnv+"="+e.pool.Config().ConnString())
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("the rebuild's process ended with %v, want exit status 3:\n%s", err, out)
	}
	if n := count(t, e.pool, `SELECT count(*) FROM ledger_rebuild_accounts.accounts`); n == 0 {
		t.Fatal("the dead rebuild left no shadow rows")
	}
	if n := count(t, e.pool, `SELECT count(*) FROM pg_class WHERE oid = 'ledger_rebuild_accounts.accounts'::regclass AND relpersistence = 'u'`); n != 1 {
		t.Fatal("the shadow table was not unlogged while it filled")
	}
	if n := count(t, e.pool, `SELECT count(*) FROM projection_rebuilds WHERE name = 'accounts' AND phase = 'building' AND events = 40`); n != 1 {
		t.Fatal("the dead rebuild is not recorded as building, after its two committed batches (40 events)")
	}

	// Its lock went with its connection; the next rebuild starts over.
	if err := projections.Rebuild(ctx, e.pool, e.store, projections.Accounts{}, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := projections.Dump(ctx, e.pool, "accounts"); !reflect.DeepEqual(got, want) {
		t.Fatalf("rebuilt accounts (%d rows) differ from the live ones (%d)", len(got), len(want))
	}
	if got := indexNames(t, e, "accounts"); !reflect.DeepEqual(got, indexes) {
		t.Fatalf("indexes after the rebuild %v, want %v", got, indexes)
	}
	if n := count(t, e.pool, `SELECT count(*) FROM pg_class WHERE oid = 'accounts'::regclass AND relpersistence = 'p'`); n != 1 {
		t.Fatal("the table swapped in is not logged")
	}
	if n := count(t, e.pool, `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ledger\_%'`); n != 0 {
		t.Fatalf("%d shadow schemas left behind", n)
	}
	st, err := projections.ListStatus(ctx, e.pool, e.store, []string{"accounts"})
	if err != nil {
		t.Fatal(err)
	}
	if rb := st[0].Rebuild; rb == nil || rb.Running || rb.Phase != projections.PhaseDone || rb.Events != 90 {
		t.Fatalf("status after the rebuild: %+v", rb)
	}
}

// TestBatchedAccountsRebuildAgreesWithApply rebuilds accounts in batches of
// 7 events over a log where every kind of account event falls in the batch
// of the registration and in later ones, and some events concern accounts
// no batch registered: the folded batches (COPY), their events for earlier
// accounts (Apply) and the replays of what the fold leaves to Apply give
// the rows the live runner's Apply gave.
func TestBatchedAccountsRebuildAgreesWithApply(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r, _ := start(t, e, projections.Accounts{})
	client := uuid.New()
	var ids []uuid.UUID
	var last eventstore.Position
	appendTo := func(id uuid.UUID, expected eventstore.ExpectedRevision, evs ...eventstore.EventData) {
		t.Helper()
		res, err := e.store.Append(ctx, account.Stream(id), expected, evs...)
		if err != nil {
			t.Fatal(err)
		}
		last = res.Position
	}
	for i := range 30 {
		id := uuid.New()
		ids = append(ids, id)
		email := "a" + id.String()[:8] + "@example.com"
		if i%7 == 3 {
			email = ""
		}
		evs := []eventstore.EventData{event(account.TypeRegistered, account.Registered{AccountID: id, Email: email})}
		if i%4 == 0 {
			evs = append(evs, event(account.TypeProvisioned, account.Provisioned{AccountID: id, ClientID: client}))
		}
		appendTo(id, eventstore.NoStream, evs...)
		if i%3 == 0 {
			appendTo(id, eventstore.Any, event(account.TypeActivated, account.Activated{AccountID: id}))
		}
		if i >= 5 {
			old := ids[i-5]
			switch i % 5 {
			case 0:
				appendTo(old, eventstore.Any, event(account.TypeNoticeGiven, account.NoticeGiven{AccountID: old, ClientID: client}))
			case 1:
				appendTo(old, eventstore.Any, event(account.TypeErased, account.Erased{AccountID: old}))
			case 2:
				appendTo(old, eventstore.Any, event(account.TypeActivated, account.Activated{AccountID: old}))
			}
		}
	}
	// An erasure and a notice for accounts the log never registered touch
	// no row: Apply's statements do nothing, and so must the rebuild.
	stray := uuid.New()
	appendTo(stray, eventstore.NoStream, event(account.TypeErased, account.Erased{AccountID: stray}),
		event(account.TypeNoticeGiven, account.NoticeGiven{AccountID: stray, ClientID: client}))
	waitFor(t, r, last)
	want, err := projections.Dump(ctx, e.pool, "accounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{7, 1000} {
		restore := projections.SetRebuildBatch(n)
		err := projections.Rebuild(ctx, e.pool, e.store, projections.Accounts{}, nil)
		restore()
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := projections.Dump(ctx, e.pool, "accounts"); !reflect.DeepEqual(got, want) {
			t.Fatalf("rebuilt in batches of %d:\n%v\nwant\n%v", n, got, want)
		}
	}
}

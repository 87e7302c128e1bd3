package commands_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/migrations/dbtest"
)

type fixedClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fixedClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fixedClock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

type fixture struct {
	h      *commands.Handler
	store  *eventstore.Postgres
	pool   *pgxpool.Pool
	clock  *fixedClock
	outbox *commands.MemoryOutbox
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	pool := dbtest.Pool(t)
	store, err := eventstore.OpenPostgres(context.Background(), pool, eventstore.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	clock := &fixedClock{now: time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)}
	outbox := commands.NewMemoryOutbox(100)
	h := commands.New(commands.Deps{
		Store: store, Clock: clock, Outbox: outbox, PublicURL: "http://ledger.test",
		PasswordParams: account.PasswordParams{Memory: 1024, Time: 1, Threads: 1}, // cheap: tests hash a lot
	})
	return fixture{h: h, store: store, pool: pool, clock: clock, outbox: outbox}
}

func (f fixture) eventCount(t *testing.T) int {
	t.Helper()
	var n int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

const password = "Correct-Horse-9"

// signedUp registers and activates an account.
func (f fixture) signedUp(t *testing.T, email string) uuid.UUID {
	t.Helper()
	ctx := context.Background()
	res, err := f.h.RegisterAccount(ctx, commands.RegisterAccount{Email: email, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	token := f.outbox.List(strings.ToLower(email))[0].Code
	if _, err := f.h.ActivateAccount(ctx, commands.ActivateAccount{Token: token}); err != nil {
		t.Fatal(err)
	}
	return res.AccountID
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var de *domain.Error
	if !errors.As(err, &de) || de.Code != code {
		t.Fatalf("got %v, want code %s", err, code)
	}
}

func TestRegisterRejectsBadInputAndAppendsNothing(t *testing.T) {
	f := newFixture(t)
	cases := []struct{ email, password, code string }{
		{"not-an-email", password, "invalid_email"},
		{"Name <a@example.com>", password, "invalid_email"},
		{"a@localhost", password, "invalid_email"},
		{"a@example.com", "short1A!", "weak_password"},
		{"a@example.com", "lowercaseonly", "weak_password"},
		{"a@example.com", "aaaaaaaaaaaaaaaaaaaaa", "weak_password"},
	}
	for _, c := range cases {
		_, err := f.h.RegisterAccount(context.Background(), commands.RegisterAccount{Email: c.email, Password: c.password})
		wantCode(t, err, c.code)
	}
	if n := f.eventCount(t); n != 0 {
		t.Fatalf("rejected sign-ups appended %d events", n)
	}
}

func TestRegisterActivateSignInLogout(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	res, err := f.h.RegisterAccount(ctx, commands.RegisterAccount{Email: "Ada@Example.com", Password: password})
	if err != nil || res.Status != "pending_activation" {
		t.Fatalf("register: %+v, %v", res, err)
	}
	msgs := f.outbox.List("ada@example.com")
	if len(msgs) != 1 || !strings.HasPrefix(msgs[0].Link, "http://ledger.test/activate?token=") {
		t.Fatalf("activation message: %+v", msgs)
	}
	// Not activated: sign-in says so, but only to the holder of the password.
	_, err = f.h.OpenSession(ctx, commands.OpenSession{Email: "ada@example.com", Password: password, DeviceID: "phone-1"})
	wantCode(t, err, "account_not_activated")

	_, err = f.h.ActivateAccount(ctx, commands.ActivateAccount{Token: res.AccountID.String() + ".wrong"})
	wantCode(t, err, "invalid_activation_token")
	if _, err := f.h.ActivateAccount(ctx, commands.ActivateAccount{Token: msgs[0].Code}); err != nil {
		t.Fatal(err)
	}
	_, err = f.h.ActivateAccount(ctx, commands.ActivateAccount{Token: msgs[0].Code})
	wantCode(t, err, "account_already_activated")

	s, err := f.h.OpenSession(ctx, commands.OpenSession{Email: "ADA@example.com", Password: password, DeviceID: "phone-1"})
	if err != nil || s.AccountID != res.AccountID {
		t.Fatalf("sign-in: %+v, %v", s, err)
	}
	sess, err := f.h.Authenticate(ctx, s.SessionToken)
	if err != nil || sess.DeviceID() != "phone-1" {
		t.Fatalf("authenticate: %v", err)
	}
	if err := f.h.CloseSession(ctx, sess.ID()); err != nil {
		t.Fatal(err)
	}
	_, err = f.h.Authenticate(ctx, s.SessionToken)
	wantCode(t, err, "invalid_session")
	before := f.eventCount(t)
	if err := f.h.CloseSession(ctx, sess.ID()); err != nil || f.eventCount(t) != before {
		t.Fatalf("closing a closed session appended or failed: %v", err)
	}
}

func TestActivationExpires(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.h.RegisterAccount(ctx, commands.RegisterAccount{Email: "late@example.com", Password: password}); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(account.ActivationTTL)
	_, err := f.h.ActivateAccount(ctx, commands.ActivateAccount{Token: f.outbox.List("late@example.com")[0].Code})
	wantCode(t, err, "activation_token_expired")
}

func TestEmailIsUniqueUnderConcurrency(t *testing.T) {
	f := newFixture(t)
	const n = 24
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.h.RegisterAccount(context.Background(), commands.RegisterAccount{Email: "same@example.com", Password: password})
		}()
	}
	wg.Wait()
	ok, taken := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, account.ErrEmailTaken):
			taken++
		default:
			t.Fatalf("unexpected: %v", err)
		}
	}
	if ok != 1 || taken != n-1 {
		t.Fatalf("%d sign-ups succeeded and %d were refused, want 1 and %d", ok, taken, n-1)
	}
}

func TestStaleReservationIsTakenOver(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// A sign-up that died after reserving the address, before its account.
	_, err := f.store.Append(ctx, account.EmailStream("ghost@example.com"), eventstore.NoStream, eventstore.EventData{
		ID: uuid.New(), Type: account.TypeEmailReserved, Data: []byte(`{"accountId":"` + uuid.NewString() + `"}`),
		Metadata: eventstore.Metadata{OccurredAt: f.clock.Now()},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.h.RegisterAccount(ctx, commands.RegisterAccount{Email: "ghost@example.com", Password: password})
	wantCode(t, err, "email_taken") // too fresh: that sign-up may still be running
	f.clock.Add(5 * time.Minute)
	if _, err := f.h.RegisterAccount(ctx, commands.RegisterAccount{Email: "ghost@example.com", Password: password}); err != nil {
		t.Fatalf("stale reservation not taken over: %v", err)
	}
}

func TestWrongPasswordsLockSignIn(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.signedUp(t, "bob@example.com")
	wrong := commands.OpenSession{Email: "bob@example.com", Password: "Wrong-Password-1", DeviceID: "d"}
	// Parallel guesses are all counted: the fifth locks.
	var wg sync.WaitGroup
	errs := make([]error, account.MaxFailuresInRow)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = f.h.OpenSession(ctx, wrong) }()
	}
	wg.Wait()
	locked := 0
	for _, err := range errs {
		if domain.KindOf(err) == domain.KindTooManyAttempts {
			locked++
		}
	}
	if locked == 0 {
		t.Fatalf("%d parallel wrong passwords did not lock sign-in: %v", len(errs), errs)
	}
	// Even the right password is refused while locked.
	_, err := f.h.OpenSession(ctx, commands.OpenSession{Email: "bob@example.com", Password: password, DeviceID: "d"})
	var de *domain.Error
	if !errors.As(err, &de) || de.Kind != domain.KindTooManyAttempts || de.RetryAfter <= 0 {
		t.Fatalf("locked sign-in answered %v", err)
	}
	f.clock.Add(account.LockoutDuration)
	if _, err := f.h.OpenSession(ctx, commands.OpenSession{Email: "bob@example.com", Password: password, DeviceID: "d"}); err != nil {
		t.Fatalf("sign-in after the lockout: %v", err)
	}
}

func TestUnknownEmailLooksLikeWrongPassword(t *testing.T) {
	f := newFixture(t)
	_, err := f.h.OpenSession(context.Background(), commands.OpenSession{Email: "nobody@example.com", Password: password, DeviceID: "d"})
	wantCode(t, err, "invalid_credentials")
	if n := f.eventCount(t); n != 0 {
		t.Fatalf("a sign-in of an unknown address appended %d events", n)
	}
}

func TestIdempotencyKeyMakesRegistrationRetrySafe(t *testing.T) {
	f := newFixture(t)
	ctx := commands.WithMeta(context.Background(), commands.Meta{IdempotencyKey: "k-1", Actor: "anonymous"})
	first, err := f.h.RegisterAccount(ctx, commands.RegisterAccount{Email: "retry@example.com", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	// The answer was lost; the client retries with the same key: the same
	// events land at the same place, which the log takes as a no-op.
	n := f.eventCount(t)
	second, err := f.h.RegisterAccount(ctx, commands.RegisterAccount{Email: "retry@example.com", Password: password})
	if err != nil || second.AccountID != first.AccountID {
		t.Fatalf("retry: account %s (%v), first was %s", second.AccountID, err, first.AccountID)
	}
	if f.eventCount(t) != n {
		t.Fatalf("the retry appended %d events", f.eventCount(t)-n)
	}
}

func TestProvisionedAccountWaitsForTheNotice(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	partner, other := uuid.New(), uuid.New()
	id, _, err := f.h.ProvisionAccount(ctx, commands.ProvisionAccount{ClientID: partner, Email: "doc@example.com",
		Password: password, FirstName: "Doc", LastName: "Test", Username: "doctest"})
	if err != nil {
		t.Fatal(err)
	}
	// Active at once: the person can sign in with what the partner passed.
	if s, err := f.h.OpenSession(ctx, commands.OpenSession{Email: "doc@example.com", Password: password, DeviceID: "d"}); err != nil || s.AccountID != id {
		t.Fatalf("sign-in of a provisioned account: %v", err)
	}
	if _, _, err := f.h.ProvisionAccount(ctx, commands.ProvisionAccount{ClientID: partner, Email: "doc@example.com", Password: password}); !errors.Is(err, account.ErrEmailTaken) {
		t.Fatalf("provisioning a taken address: %v", err)
	}
	if err := f.h.ConfirmNotice(ctx, other, id); !errors.Is(err, account.ErrNotProvisionedByClient) {
		t.Fatalf("another client confirmed the notice: %v", err)
	}
	if err := f.h.ConfirmNotice(ctx, partner, id); err != nil {
		t.Fatal(err)
	}
	n := f.eventCount(t)
	if err := f.h.ConfirmNotice(ctx, partner, id); err != nil || f.eventCount(t) != n {
		t.Fatalf("confirming again appended or failed: %v", err)
	}
}

package commands_test

import (
	"context"
	"errors"
	"regexp"
	"sort"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/enrollment"
	"github.com/consentledger/ledger/eventstore"
)

func enrollmentFixture(t *testing.T, maxPinFailures int) (fixture, uuid.UUID) {
	t.Helper()
	f := newFixture(t)
	p := enrollment.DefaultPolicy
	p.SecretParams = account.PasswordParams{Memory: 1024, Time: 1, Threads: 1}
	p.PinMaxFailures = maxPinFailures
	f.h = commands.New(commands.Deps{Store: f.store, Clock: f.clock, Outbox: f.outbox, Enrollment: p})
	ctx := context.Background()
	id := uuid.New()
	// Enrolled with the shortcut on d1, then d2 verified an enrollment code.
	if err := f.h.RequestSmsCode(ctx, id, "d1", "phoneNumberCertification", "06 00 00 00 00"); err != nil {
		t.Fatal(err)
	}
	code := f.outbox.List("0600000000")[0].Code
	if !regexp.MustCompile(`^[0-9]{6}$`).MatchString(code) {
		t.Fatalf("SMS code %q is not 6 digits", code)
	}
	if err := f.h.EnrollWithPhoneNumber(ctx, id, "d1", "0600000000", code, "1234"); err != nil {
		t.Fatal(err)
	}
	if err := f.h.RequestSmsCode(ctx, id, "d2", "enrollment", ""); err != nil {
		t.Fatal(err)
	}
	if already, err := f.h.VerifyEnrollmentCode(ctx, id, "d2", f.outbox.List("0600000000")[0].Code); err != nil || !already {
		t.Fatalf("step 6: %v, %v", already, err)
	}
	return f, id
}

func concurrentWrongPins(t *testing.T, f fixture, id uuid.UUID, n int) []error {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = f.h.Enroll(context.Background(), id, "d2", "9999")
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

func pinFailures(t *testing.T, f fixture, id uuid.UUID) []int {
	t.Helper()
	evs, err := eventstore.ReadWholeStream(context.Background(), f.store, enrollment.Stream(id))
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, ev := range evs {
		if ev.Type == enrollment.TypePinFailed {
			p, _ := enrollment.Decode(ev.Type, ev.Data)
			out = append(out, p.(*enrollment.PinFailed).FailuresInRow)
		}
	}
	return out
}

// Twelve wrong PINs at the same instant count as twelve: each one is
// decided on the stream as the previous ones left it.
func TestTwelveConcurrentWrongPinsAreCountedExactly(t *testing.T) {
	f, id := enrollmentFixture(t, 20)
	errs := concurrentWrongPins(t, f, id, 12)
	var left []int
	for _, err := range errs {
		var de *domain.Error
		if !errors.As(err, &de) || de.Code != "pin_wrong" {
			t.Fatalf("got %v, want pin_wrong", err)
		}
		left = append(left, *de.AttemptsLeft)
	}
	sort.Ints(left)
	for i, l := range left {
		if l != 8+i {
			t.Fatalf("attempts left %v, want 8..19 once each", left)
		}
	}
	got := pinFailures(t, f, id)
	for i, n := range got {
		if n != i+1 {
			t.Fatalf("failure counts in the stream %v, want 1..12", got)
		}
	}
	if len(got) != 12 {
		t.Fatalf("%d failures recorded, want 12", len(got))
	}
}

func TestTwelveConcurrentWrongPinsBlockAtTheThird(t *testing.T) {
	f, id := enrollmentFixture(t, 3)
	codes := map[string]int{}
	for _, err := range concurrentWrongPins(t, f, id, 12) {
		var de *domain.Error
		errors.As(err, &de)
		codes[de.Code]++
	}
	if codes["pin_wrong"] != 2 || codes["account_blocked"] != 10 {
		t.Fatalf("answers %v, want 2 × pin_wrong and 10 × account_blocked", codes)
	}
	if got := pinFailures(t, f, id); len(got) != 3 {
		t.Fatalf("failures recorded %v, want exactly 3", got)
	}
}

func TestSecretsNeverReachTheLog(t *testing.T) {
	f, id := enrollmentFixture(t, 3)
	ctx := context.Background()
	var data string
	err := f.pool.QueryRow(ctx, `SELECT string_agg(data::text || metadata::text, ' ') FROM events WHERE stream_id = $1`, enrollment.Stream(id)).Scan(&data)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range f.outbox.List("0600000000") {
		if regexp.MustCompile(`"` + m.Code + `"|:` + m.Code).MatchString(data) {
			t.Fatalf("SMS code %s appears in the log", m.Code)
		}
	}
	if regexp.MustCompile(`"1234"`).MatchString(data) {
		t.Fatal("the PIN appears in the log")
	}
}

package otp_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/otp"
)

var (
	t0    = time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
	rules = otp.Rules{
		TTL: 5 * time.Minute, MaxFailures: 3, PerWindow: 3, Window: time.Hour,
		Params: account.PasswordParams{Memory: 1024, Time: 1, Threads: 1},
		Errors: otp.NewErrors("carkey", "car-key code", "vehicle"),
	}
)

// history is a Given: the codes folded from facts, as an aggregate folds
// them from its events, with the time they happened at.
type history struct {
	c   otp.Codes
	now time.Time
}

func given() *history { return &history{now: t0} }

func (h *history) at(d time.Duration) *history { h.now = t0.Add(d); return h }

// issue is When Issue, Then no error; the fact is applied.
func (h *history) issue(t *testing.T, purpose, target, device, secret string) otp.Issued {
	t.Helper()
	f, err := h.c.Issue(rules, uuid.New(), purpose, target, device, secret, h.now)
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	h.c.ApplyIssued(f, h.now)
	return f
}

// verify is When Verify, Then the error code wantCode ("" for none); the
// fact returned, if any, is applied. It also checks that the outcome is one
// of the three Verify promises.
func (h *history) verify(t *testing.T, purpose, target, device, secret, wantCode string) (otp.Used, *otp.Failed, *domain.Error) {
	t.Helper()
	used, failed, err := h.c.Verify(rules, purpose, target, device, secret, h.now)
	var de *domain.Error
	switch {
	case wantCode == "" && err != nil:
		t.Fatalf("unexpected error %v", err)
	case wantCode != "" && (!errors.As(err, &de) || de.Code != wantCode):
		t.Fatalf("got %v, want %s", err, wantCode)
	case err == nil && (failed != nil || used.ID == uuid.Nil):
		t.Fatalf("success without a Used fact, or with a Failed one: %+v %+v", used, failed)
	case err != nil && used.ID != uuid.Nil:
		t.Fatalf("refusal %v with a Used fact %+v", err, used)
	}
	if failed != nil {
		h.c.ApplyFailed(*failed)
	}
	if err == nil {
		h.c.ApplyUsed(used)
	}
	return used, failed, de
}

func TestACodeIsSingleUse(t *testing.T) {
	h := given()
	issued := h.issue(t, "unlock", "car1", "d1", "123456")
	used, _, _ := h.verify(t, "unlock", "car1", "d1", "123456", "")
	if used.ID != issued.ID {
		t.Fatalf("used %s, issued %s", used.ID, issued.ID)
	}
	if _, failed, _ := h.verify(t, "unlock", "car1", "d1", "123456", "carkey_code_missing"); failed != nil {
		t.Fatal("a used code counted a failure")
	}
}

func TestACodeExpiresAtItsTTL(t *testing.T) {
	h := given()
	issued := h.issue(t, "unlock", "car1", "d1", "123456")
	if !issued.ExpiresAt.Equal(t0.Add(rules.TTL)) {
		t.Fatalf("expires at %s", issued.ExpiresAt)
	}
	h.at(rules.TTL)
	if _, failed, _ := h.verify(t, "unlock", "car1", "d1", "123456", "carkey_code_expired"); failed != nil {
		t.Fatal("an expired code counted a failure")
	}
	h.at(rules.TTL - time.Nanosecond)
	h.verify(t, "unlock", "car1", "d1", "123456", "") // the last instant of its life
}

func TestACodeIsBurntAfterMaxFailuresWithTheAttemptsLeftCountingDown(t *testing.T) {
	h := given()
	issued := h.issue(t, "unlock", "car1", "d1", "123456")
	for i := 1; i < rules.MaxFailures; i++ {
		_, failed, de := h.verify(t, "unlock", "car1", "d1", "000000", "carkey_code_wrong")
		left := rules.MaxFailures - i
		if *failed != (otp.Failed{ID: issued.ID, Failures: i}) || de.AttemptsLeft == nil || *de.AttemptsLeft != left {
			t.Fatalf("after %d wrong codes: %+v, attempts left %v", i, failed, de.AttemptsLeft)
		}
		if want := fmt.Sprintf("wrong car-key code: %d attempts left", left); de.Message != want {
			t.Fatalf("message %q, want %q", de.Message, want)
		}
	}
	_, failed, _ := h.verify(t, "unlock", "car1", "d1", "000000", "carkey_code_burnt")
	if *failed != (otp.Failed{ID: issued.ID, Failures: rules.MaxFailures, Burnt: true}) {
		t.Fatalf("last wrong code: %+v", failed)
	}
	if _, failed, _ := h.verify(t, "unlock", "car1", "d1", "123456", "carkey_code_burnt"); failed != nil { // the right code, too late
		t.Fatal("a burnt code counted a failure")
	}
}

func TestARightCodeAfterWrongOnesVerifies(t *testing.T) {
	h := given()
	h.issue(t, "unlock", "car1", "d1", "123456")
	for range rules.MaxFailures - 1 {
		h.verify(t, "unlock", "car1", "d1", "000000", "carkey_code_wrong")
	}
	h.verify(t, "unlock", "car1", "d1", "123456", "")
}

func TestACodeIsBoundToItsDeviceTargetAndPurpose(t *testing.T) {
	h := given()
	h.issue(t, "unlock", "car1", "d1", "123456")
	h.verify(t, "unlock", "car1", "d2", "123456", "carkey_code_missing")
	h.verify(t, "unlock", "car2", "d1", "123456", "carkey_code_missing")
	h.verify(t, "pair", "car1", "d1", "123456", "carkey_code_missing")
	h.verify(t, "unlock", "", "d1", "123456", "") // no target: the latest of the device, whatever its target
}

func TestTheLatestCodeSupersedesEarlierOnes(t *testing.T) {
	h := given()
	h.issue(t, "unlock", "car1", "d1", "111111")
	h.issue(t, "unlock", "car1", "d1", "222222")
	h.verify(t, "unlock", "car1", "d1", "111111", "carkey_code_wrong")
	h.verify(t, "unlock", "car1", "d1", "222222", "")
}

func TestCodesAreRateLimitedPerPurposeAndTarget(t *testing.T) {
	h := given()
	for i := range rules.PerWindow {
		h.at(time.Duration(i)*time.Minute).issue(t, "unlock", "car1", "d1", "123456")
	}
	_, err := h.c.Issue(rules, uuid.New(), "unlock", "car1", "d2", "123456", h.now) // another device, same target
	var de *domain.Error
	if !errors.As(err, &de) || de.Code != "carkey_rate_limited" || de.Kind != domain.KindTooManyAttempts {
		t.Fatalf("got %v, want carkey_rate_limited", err)
	}
	if want := t0.Add(rules.Window).Sub(h.now); de.RetryAfter != want { // when the oldest code leaves the window
		t.Fatalf("retry after %s, want %s", de.RetryAfter, want)
	}
	h.issue(t, "unlock", "car2", "d1", "123456") // another target
	h.issue(t, "pair", "car1", "d1", "123456")   // another purpose
	h.at(rules.Window).issue(t, "unlock", "car1", "d1", "123456")
}

func TestARefusedDecisionLeavesNoTrace(t *testing.T) {
	h := given()
	issued := h.issue(t, "unlock", "car1", "d1", "123456")
	for range 2 { // a command retried after a concurrent append decides again on the same state
		_, failed, err := h.c.Verify(rules, "unlock", "car1", "d1", "000000", h.now)
		if err == nil || *failed != (otp.Failed{ID: issued.ID, Failures: 1}) {
			t.Fatalf("%+v, %v", failed, err)
		}
	}
}

func TestOnlyTheArgon2idHashOfACodeIsRecorded(t *testing.T) {
	h := given()
	a, b := h.issue(t, "unlock", "car1", "d1", "424242"), h.issue(t, "unlock", "car2", "d1", "424242")
	if !strings.HasPrefix(a.Hash, "$argon2id$") || strings.Contains(a.Hash, "424242") || a.Hash == b.Hash {
		t.Fatalf("hashes %q and %q: want salted argon2id without the code", a.Hash, b.Hash)
	}
	if !account.VerifyPassword("424242", a.Hash) {
		t.Fatal("the hash does not verify the code")
	}

	// A code folded from a fact verifies through its hash alone, whatever
	// the cost parameters it was hashed with: they travel with the hash.
	h = given()
	stronger := account.PasswordParams{Memory: 2048, Time: 2, Threads: 1}
	id := uuid.New()
	h.c.ApplyIssued(otp.Issued{ID: id, Purpose: "unlock", Target: "car1", Device: "d1",
		Hash: account.HashPassword("777777", stronger), ExpiresAt: t0.Add(time.Minute)}, t0)
	if used, _, _ := h.verify(t, "unlock", "car1", "d1", "777777", ""); used.ID != id {
		t.Fatalf("used %s, want %s", used.ID, id)
	}

	// A malformed hash never matches: it is a wrong code, and counts.
	h = given()
	h.c.ApplyIssued(otp.Issued{ID: uuid.New(), Purpose: "unlock", Target: "car1", Device: "d1",
		Hash: "777777", ExpiresAt: t0.Add(time.Minute)}, t0)
	h.verify(t, "unlock", "car1", "d1", "777777", "carkey_code_wrong")
}

func TestErrorsAreEachUsersOwn(t *testing.T) {
	sms := otp.NewErrors("sms", "SMS code", "phone")
	for _, c := range []struct {
		err  *domain.Error
		kind domain.Kind
		code string
		msg  string
	}{
		{sms.Missing, domain.KindConflict, "sms_code_missing", "no SMS code of this kind was requested on this device"},
		{sms.Expired, domain.KindInvalid, "sms_code_expired", "the SMS code has expired: request a new one"},
		{sms.Burnt, domain.KindInvalid, "sms_code_burnt", "too many wrong tries: request a new SMS code"},
		{sms.Wrong, domain.KindInvalid, "sms_code_wrong", "wrong SMS code"},
		{sms.RateLimited, domain.KindTooManyAttempts, "sms_rate_limited", "too many SMS codes for this phone: try again later"},
	} {
		if c.err.Kind != c.kind || c.err.Code != c.code || c.err.Message != c.msg {
			t.Fatalf("got %+v, want %s %s %q", c.err, c.kind, c.code, c.msg)
		}
	}

	// A user that sets no errors still gets stable codes of a known kind.
	r := rules
	r.Errors = otp.Errors{Expired: sms.Expired}
	var c otp.Codes
	_, _, err := c.Verify(r, "unlock", "car1", "d1", "123456", t0)
	if !errors.Is(err, otp.DefaultErrors.Missing) || domain.KindOf(err) != domain.KindConflict {
		t.Fatalf("got %v, want %v", err, otp.DefaultErrors.Missing)
	}
	f, _ := c.Issue(r, uuid.New(), "unlock", "car1", "d1", "123456", t0)
	c.ApplyIssued(f, t0)
	if _, _, err := c.Verify(r, "unlock", "car1", "d1", "123456", t0.Add(r.TTL)); !errors.Is(err, sms.Expired) {
		t.Fatalf("got %v, want the user's %v", err, sms.Expired)
	}
}

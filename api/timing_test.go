package api

import (
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/enrollment"
)

// timingCase is one secret compare path: check presents a secret and
// reports whether it was accepted.
type timingCase struct {
	name  string
	right string
	// wrong secrets: differing in the first byte (what an early-exit
	// compare rejects fastest), in the last byte (slowest), and of another
	// length.
	wrong []string
	check func(secret string) bool
	// baseline, when set, is what the wrong secrets are timed against
	// instead of the right one: a path whose refusal does more work than
	// its acceptance (building the 401) must still not depend on how close
	// a wrong secret comes to the right one.
	baseline string
	// batch is how many checks one sample times: cheap compares are timed
	// in batches so that the timer's resolution does not decide.
	batch   int
	samples int
}

// TestSecretComparesTakeTheSameTime: for each secret compare path, right
// and wrong secrets take the same time within noise. Samples of right and
// wrong secrets are interleaved (so load on the machine falls on both
// alike) and their medians compared; a path passes when the medians differ
// by less than 25% (plus one microsecond per sample), in one of three
// tries. An early-exit compare of a 64-character hash fails this by far
// on its first-byte case; a constant-time one passes even on a loaded
// machine.
func TestSecretComparesTakeTheSameTime(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	// Client secret: the hasher fosite calls with the stored SHA-256.
	clientSecret := account.NewSecret()
	clientHash := []byte(account.HashToken(clientSecret))
	// Session token: the session folded from its stream checks the token's hash.
	sessionSecret := account.NewSecret()
	var session account.Session
	session.Apply(&account.SessionOpened{SessionID: uuid.New(), AccountID: uuid.New(), DeviceID: "d1",
		TokenHash: account.HashToken(sessionSecret), ExpiresAt: time.Now().Add(time.Hour)})
	// PIN: argon2id, with light parameters (the compare is the same).
	pins := enrollment.New()
	pins.Apply(&enrollment.PinSet{PinHash: account.HashPassword("482913", account.PasswordParams{Memory: 512, Time: 1, Threads: 1})}, time.Now())
	// Admin token: the middleware with a token configured.
	const adminToken = "admin-token-for-timing-0123456789"
	admin := New(Config{AdminToken: adminToken}, Deps{})
	guarded := admin.RequireAdmin(func(echo.Context) error { return nil })
	e := echo.New()
	req := httptest.NewRequest("GET", "/v1/admin/projections", nil)
	ctx := e.NewContext(req, httptest.NewRecorder())

	// Password: argon2id with the default parameters; an unknown e-mail
	// spends one verification against a dummy hash (marked here by a
	// prefix), so it must cost what a wrong password costs.
	const password, unknownEmail = "Correct-Horse-9", "unknown-email:"
	passwordHash := account.HashPassword(password, account.DefaultPasswordParams)

	cases := []timingCase{
		{
			name: "password", right: password, wrong: []string{"Xorrect-Horse-9", "Correct-Horse-X", unknownEmail + password},
			check: func(s string) bool {
				if rest, unknown := strings.CutPrefix(s, unknownEmail); unknown {
					account.BurnPasswordCheck(rest)
					return false
				}
				return account.VerifyPassword(s, passwordHash)
			},
			batch: 1, samples: 15,
		},
		{
			name: "client secret", right: clientSecret, wrong: variants(clientSecret),
			check: func(s string) bool {
				return (sha256Hasher{}).Compare(context.Background(), clientHash, []byte(s)) == nil
			},
			batch: 200, samples: 201,
		},
		{
			name: "session token", right: sessionSecret, wrong: variants(sessionSecret),
			check: func(s string) bool { return session.Authenticate(account.HashToken(s), time.Now()) == nil },
			batch: 200, samples: 201,
		},
		{
			name: "admin token", right: adminToken, wrong: variants(adminToken),
			baseline: "0123456789-another-token-of-33-ch",
			check: func(s string) bool {
				req.Header.Set(echo.HeaderAuthorization, "Bearer "+s)
				return guarded(ctx) == nil
			},
			batch: 200, samples: 201,
		},
		{
			name: "PIN", right: "482913", wrong: []string{"082913", "482910", "48291"},
			check: func(s string) bool { return pins.CheckPinAgainst(s, nil).OK },
			batch: 4, samples: 61,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.check(tc.right) {
				t.Fatal("the right secret is refused")
			}
			for _, w := range tc.wrong {
				if tc.check(w) {
					t.Fatalf("a wrong secret %q is accepted", w)
				}
			}
			for _, wrong := range tc.wrong {
				var last string
				ok := false
				for range 3 {
					right, bad := tc.medians(wrong)
					diff := right - bad
					if diff < 0 {
						diff = -diff
					}
					bound := max(right, bad)/4 + time.Microsecond
					last = fmt.Sprintf("median right %v, wrong %v (bound %v)", right, bad, bound)
					if diff <= bound {
						ok = true
						break
					}
				}
				if !ok {
					t.Errorf("wrong secret %q: %s", wrong, last)
				} else {
					t.Logf("wrong secret %q: %s", wrong, last)
				}
			}
		})
	}
}

// medians times interleaved batches of right (or baseline) and wrong checks.
func (tc timingCase) medians(wrong string) (right, bad time.Duration) {
	ref := tc.right
	if tc.baseline != "" {
		ref = tc.baseline
	}
	r := make([]time.Duration, 0, tc.samples)
	w := make([]time.Duration, 0, tc.samples)
	timeBatch := func(s string) time.Duration {
		start := time.Now()
		for range tc.batch {
			tc.check(s)
		}
		return time.Since(start)
	}
	for i := range tc.samples {
		// Alternate which goes first, so neither always follows a warm cache.
		if i%2 == 0 {
			r = append(r, timeBatch(ref))
			w = append(w, timeBatch(wrong))
		} else {
			w = append(w, timeBatch(wrong))
			r = append(r, timeBatch(ref))
		}
	}
	slices.Sort(r)
	slices.Sort(w)
	return r[len(r)/2], w[len(w)/2]
}

// variants are wrong secrets of s: first byte changed, last byte changed,
// one byte shorter.
func variants(s string) []string {
	flip := func(b byte) byte {
		if b == 'A' {
			return 'B'
		}
		return 'A'
	}
	first := []byte(s)
	first[0] = flip(first[0])
	last := []byte(s)
	last[len(last)-1] = flip(last[len(last)-1])
	return []string{string(first), string(last), s[:len(s)-1]}
}

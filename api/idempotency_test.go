package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/domain"
)

// idemProbe is a command route that counts its runs and answers with a
// secret, the way POST /v1/sessions answers with a session token.
type idemProbe struct {
	env    *testEnv
	runs   atomic.Int64
	secret string
}

func newIdemProbe(t *testing.T) *idemProbe {
	t.Helper()
	p := &idemProbe{env: newEnv(t, withDB(t)), secret: "tok_" + rand.Text()}
	p.env.srv.Echo().POST("/t/accounts", func(c echo.Context) error {
		n := p.runs.Add(1)
		var in struct {
			Email string `json:"email"`
		}
		if err := Bind(c, &in); err != nil {
			return err
		}
		c.Response().Header().Set(echo.HeaderLocation, fmt.Sprintf("/t/accounts/%d", n))
		return c.JSON(http.StatusCreated, map[string]any{"accountId": n, "sessionToken": p.secret})
	})
	return p
}

func (p *idemProbe) post(t *testing.T, key, body string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	return p.env.do(t, jsonRequest(http.MethodPost, "/t/accounts", body, append([]string{HeaderIdempotencyKey, key}, header...)...))
}

func (p *idemProbe) rows(t *testing.T) int {
	t.Helper()
	var n int
	if err := p.env.pool.QueryRow(context.Background(), `SELECT count(*) FROM idempotency_keys`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// sameAnswer fails unless b repeats a exactly, as a replay of it.
func sameAnswer(t *testing.T, a, b *httptest.ResponseRecorder) {
	t.Helper()
	if a.Code != b.Code || !bytes.Equal(a.Body.Bytes(), b.Body.Bytes()) {
		t.Fatalf("answers differ:\n%d %s\n%d %s", a.Code, a.Body, b.Code, b.Body)
	}
	for _, h := range []string{echo.HeaderContentType, echo.HeaderLocation} {
		if a.Header().Get(h) != b.Header().Get(h) {
			t.Errorf("%s differs: %q vs %q", h, a.Header().Get(h), b.Header().Get(h))
		}
	}
	if b.Header().Get(HeaderIdempotentReplayed) != "true" {
		t.Errorf("replay lacks %s: true", HeaderIdempotentReplayed)
	}
}

func TestIdempotencyReplaysTheFirstAnswer(t *testing.T) {
	t.Parallel()
	p := newIdemProbe(t)
	body := `{"email":"a@example.org"}`

	first := p.post(t, "key-1", body)
	if first.Code != http.StatusCreated {
		t.Fatalf("first = %d %s", first.Code, first.Body)
	}
	if first.Header().Get(HeaderIdempotentReplayed) != "" {
		t.Error("first answer is marked as replayed")
	}
	second := p.post(t, "key-1", body)
	sameAnswer(t, first, second)
	if p.runs.Load() != 1 {
		t.Fatalf("handler ran %d times, want 1", p.runs.Load())
	}

	reused := p.post(t, "key-1", `{"email":"b@example.org"}`)
	decodeProblem(t, reused, http.StatusUnprocessableEntity, codeIdempotencyKeyReused)

	other := p.post(t, "key-2", body)
	if other.Code != http.StatusCreated || other.Header().Get(HeaderIdempotentReplayed) != "" {
		t.Fatalf("new key = %d, replayed %q", other.Code, other.Header().Get(HeaderIdempotentReplayed))
	}
	plain := p.env.do(t, jsonRequest(http.MethodPost, "/t/accounts", body))
	if plain.Code != http.StatusCreated {
		t.Fatalf("without key = %d", plain.Code)
	}
	if p.runs.Load() != 3 {
		t.Fatalf("handler ran %d times, want 3", p.runs.Load())
	}
}

func TestIdempotencyQueryStringIsPartOfTheRequest(t *testing.T) {
	t.Parallel()
	p := newIdemProbe(t)
	if rec := p.env.do(t, jsonRequest(http.MethodPost, "/t/accounts?notify=true", `{}`, HeaderIdempotencyKey, "k")); rec.Code != http.StatusCreated {
		t.Fatalf("first = %d", rec.Code)
	}
	rec := p.env.do(t, jsonRequest(http.MethodPost, "/t/accounts?notify=false", `{}`, HeaderIdempotencyKey, "k"))
	decodeProblem(t, rec, http.StatusUnprocessableEntity, codeIdempotencyKeyReused)
}

func TestIdempotencyParallelRequestsRunOnce(t *testing.T) {
	t.Parallel()
	env := newEnv(t, withDB(t))
	const n = 8
	var runs atomic.Int64
	var waiting atomic.Int64
	allWaiting := make(chan struct{})
	env.srv.idem.onWait = func() {
		if waiting.Add(1) == n-1 {
			close(allWaiting)
		}
	}
	env.srv.Echo().POST("/t/slow", func(c echo.Context) error {
		run := runs.Add(1)
		// Hold the answer until every other request is waiting for it, so
		// the test really covers requests that overlap.
		select {
		case <-allWaiting:
		case <-c.Request().Context().Done():
			return c.Request().Context().Err()
		}
		c.Response().Header().Set(echo.HeaderLocation, fmt.Sprintf("/t/slow/%d", run))
		return c.JSON(http.StatusCreated, map[string]any{"run": run})
	})

	// A safety net so that a broken implementation fails instead of hanging.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	answers := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r := jsonRequest(http.MethodPost, "/t/slow", `{"same":"body"}`, HeaderIdempotencyKey, "parallel-key")
			r.ctx = ctx
			answers[i] = env.do(t, r)
		})
	}
	wg.Wait()

	if runs.Load() != 1 {
		t.Fatalf("handler ran %d times, want 1", runs.Load())
	}
	var original *httptest.ResponseRecorder
	replayed := 0
	for _, a := range answers {
		if a.Code != http.StatusCreated {
			t.Fatalf("answer %d %s", a.Code, a.Body)
		}
		if a.Header().Get(HeaderIdempotentReplayed) == "true" {
			replayed++
		} else {
			original = a
		}
	}
	if original == nil || replayed != n-1 {
		t.Fatalf("%d replayed answers, want %d and one original", replayed, n-1)
	}
	for _, a := range answers {
		if a != original {
			sameAnswer(t, original, a)
		}
	}
}

func TestIdempotencyStoresNoSecretInClear(t *testing.T) {
	t.Parallel()
	p := newIdemProbe(t)
	key := "client-key-" + rand.Text()
	if rec := p.post(t, key, `{"email":"a@example.org"}`, "Authorization", "Bearer caller-credential"); rec.Code != http.StatusCreated ||
		!strings.Contains(rec.Body.String(), p.secret) {
		t.Fatalf("first = %d %s", rec.Code, rec.Body)
	}
	var keyHash, requestHash, sealed []byte
	var state string
	var status int
	err := p.env.pool.QueryRow(context.Background(),
		`SELECT key_hash, request_hash, state, status, sealed FROM idempotency_keys`).Scan(&keyHash, &requestHash, &state, &status, &sealed)
	if err != nil {
		t.Fatal(err)
	}
	if state != "done" || status != http.StatusCreated || len(sealed) == 0 {
		t.Fatalf("row = %s %d, %d sealed bytes", state, status, len(sealed))
	}
	dump := bytes.Join([][]byte{keyHash, requestHash, sealed}, nil)
	for _, clear := range []string{p.secret, key, "caller-credential", "a@example.org", "sessionToken"} {
		if bytes.Contains(dump, []byte(clear)) {
			t.Errorf("the table holds %q in clear", clear)
		}
	}
	// The sealed answer still replays.
	if rec := p.post(t, key, `{"email":"a@example.org"}`, "Authorization", "Bearer caller-credential"); !strings.Contains(rec.Body.String(), p.secret) {
		t.Fatalf("replay = %d %s", rec.Code, rec.Body)
	}
}

func TestIdempotencyDoesNotStoreServerErrors(t *testing.T) {
	t.Parallel()
	env := newEnv(t, withDB(t))
	var runs atomic.Int64
	env.srv.Echo().POST("/t/flaky", func(c echo.Context) error {
		switch runs.Add(1) {
		case 1:
			return errors.New("event store timeout")
		case 2:
			panic("probe panic")
		case 3:
			return domain.New(domain.KindUnavailable, "eventstore_down", "the event log is unavailable")
		}
		return c.JSON(http.StatusCreated, map[string]string{"ok": "yes"})
	})
	post := func() *httptest.ResponseRecorder {
		return env.do(t, jsonRequest(http.MethodPost, "/t/flaky", `{}`, HeaderIdempotencyKey, "flaky"))
	}
	decodeProblem(t, post(), http.StatusInternalServerError, codeInternal)
	decodeProblem(t, post(), http.StatusInternalServerError, codeInternal)
	decodeProblem(t, post(), http.StatusServiceUnavailable, "eventstore_down")
	if rec := post(); rec.Code != http.StatusCreated || rec.Header().Get(HeaderIdempotentReplayed) != "" {
		t.Fatalf("fourth = %d, replayed %q", rec.Code, rec.Header().Get(HeaderIdempotentReplayed))
	}
	if rec := post(); rec.Code != http.StatusCreated || rec.Header().Get(HeaderIdempotentReplayed) != "true" {
		t.Fatalf("fifth = %d, replayed %q", rec.Code, rec.Header().Get(HeaderIdempotentReplayed))
	}
	if runs.Load() != 4 {
		t.Fatalf("handler ran %d times, want 4", runs.Load())
	}
}

func TestIdempotencyReplaysErrorAnswers(t *testing.T) {
	t.Parallel()
	env := newEnv(t, withDB(t))
	var runs atomic.Int64
	env.srv.Echo().POST("/t/conflict", func(echo.Context) error {
		runs.Add(1)
		return domain.New(domain.KindConflict, "already_enrolled", "the device is already enrolled")
	})
	post := func() *httptest.ResponseRecorder {
		return env.do(t, jsonRequest(http.MethodPost, "/t/conflict", `{}`, HeaderIdempotencyKey, "k"))
	}
	first := post()
	p := decodeProblem(t, first, http.StatusConflict, "already_enrolled")
	second := post()
	sameAnswer(t, first, second)
	if !strings.Contains(second.Body.String(), p.RequestID) {
		t.Errorf("replayed problem does not carry the first request id")
	}
	if runs.Load() != 1 {
		t.Fatalf("handler ran %d times, want 1", runs.Load())
	}
}

func TestIdempotencyIsScopedByCallerAndPath(t *testing.T) {
	t.Parallel()
	env := newEnv(t, withDB(t))
	var runs atomic.Int64
	env.srv.Echo().POST("/t/vehicles/:vin/services", func(c echo.Context) error {
		n := runs.Add(1)
		return c.JSON(http.StatusCreated, map[string]any{"vin": c.Param("vin"), "run": n})
	})
	post := func(vin, auth string) *httptest.ResponseRecorder {
		return env.do(t, jsonRequest(http.MethodPost, "/t/vehicles/"+vin+"/services", `{}`,
			HeaderIdempotencyKey, "shared-key", "Authorization", auth))
	}
	alice := post("VIN1", "Bearer alice")
	bob := post("VIN1", "Bearer bob")
	otherVehicle := post("VIN2", "Bearer alice")
	for _, rec := range []*httptest.ResponseRecorder{alice, bob, otherVehicle} {
		if rec.Code != http.StatusCreated || rec.Header().Get(HeaderIdempotentReplayed) != "" {
			t.Fatalf("independent request = %d, replayed %q: %s", rec.Code, rec.Header().Get(HeaderIdempotentReplayed), rec.Body)
		}
	}
	if bytes.Equal(alice.Body.Bytes(), bob.Body.Bytes()) {
		t.Fatal("bob got alice's answer")
	}
	sameAnswer(t, alice, post("VIN1", "Bearer alice"))
	if runs.Load() != 3 {
		t.Fatalf("handler ran %d times, want 3", runs.Load())
	}
}

func TestIdempotencyKeyValidation(t *testing.T) {
	t.Parallel()
	p := newIdemProbe(t)
	for name, values := range map[string][]string{
		"empty":       {""},
		"too long":    {strings.Repeat("k", 256)},
		"non-ASCII":   {"clé"},
		"control":     {"a\x01b"},
		"two headers": {"a", "b"},
	} {
		t.Run(name, func(t *testing.T) {
			r := jsonRequest(http.MethodPost, "/t/accounts", `{}`)
			r.headers = http.Header{HeaderIdempotencyKey: values}
			decodeProblem(t, p.env.do(t, r), http.StatusBadRequest, codeInvalidIdempotencyKey)
		})
	}
	if rec := p.post(t, strings.Repeat("k", 255), `{}`); rec.Code != http.StatusCreated {
		t.Fatalf("255-character key = %d %s", rec.Code, rec.Body)
	}
	if rec := p.post(t, "with space ~!", `{}`); rec.Code != http.StatusCreated {
		t.Fatalf("printable key = %d %s", rec.Code, rec.Body)
	}
	if p.runs.Load() != 2 {
		t.Fatalf("handler ran %d times, want 2 (invalid keys must not run it)", p.runs.Load())
	}
}

func TestIdempotencyLeavesQueriesAlone(t *testing.T) {
	t.Parallel()
	p := newIdemProbe(t)
	p.env.srv.Echo().GET("/t/accounts", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) })
	rec := p.env.do(t, request{method: http.MethodGet, target: "/t/accounts", header: map[string]string{HeaderIdempotencyKey: "k"}})
	if rec.Code != http.StatusNoContent {
		t.Fatalf("GET = %d", rec.Code)
	}
	rec = p.env.do(t, jsonRequest(http.MethodPost, "/no/such/route", `{}`, HeaderIdempotencyKey, "k"))
	decodeProblem(t, rec, http.StatusNotFound, codeNotFound)
	if n := p.rows(t); n != 0 {
		t.Fatalf("%d rows stored for a query and an unmatched route", n)
	}
}

func TestIdempotencyBodyLimit(t *testing.T) {
	t.Parallel()
	p := newIdemProbe(t)
	big := bytes.Repeat([]byte(" "), int(DefaultBodyLimit)+1)
	rec := p.env.do(t, request{method: http.MethodPost, target: "/t/accounts", body: bytes.NewBuffer(big),
		header: map[string]string{"Content-Type": "application/json", HeaderIdempotencyKey: "k"}})
	decodeProblem(t, rec, http.StatusRequestEntityTooLarge, codeBodyTooLarge)
	// Wrapped so that the length is unknown and only reading finds the excess.
	r := request{method: http.MethodPost, target: "/t/accounts", body: struct{ *bytes.Reader }{bytes.NewReader(big)},
		header: map[string]string{"Content-Type": "application/json", HeaderIdempotencyKey: "k"}}
	decodeProblem(t, p.env.do(t, r), http.StatusRequestEntityTooLarge, codeBodyTooLarge)
	if p.runs.Load() != 0 || p.rows(t) != 0 {
		t.Fatalf("runs %d, rows %d; want neither", p.runs.Load(), p.rows(t))
	}
}

// insertRunning stores a running row for the probe's POST /t/accounts with
// body {} and no Authorization, leased for lease from now (negative: expired).
func insertRunning(t *testing.T, p *idemProbe, key string, lease time.Duration) {
	t.Helper()
	k, err := deriveIdemKeys(http.MethodPost, "/t/accounts", "/t/accounts", "", "", key, []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.env.pool.Exec(context.Background(),
		`INSERT INTO idempotency_keys (key_hash, request_hash, state, locked_until)
		 VALUES ($1, $2, 'running', now() + $3::bigint * interval '1 microsecond')`,
		k.keyHash, k.requestHash, lease.Microseconds())
	if err != nil {
		t.Fatal(err)
	}
}

func TestIdempotencyTakesOverAnAbandonedKey(t *testing.T) {
	t.Parallel()
	p := newIdemProbe(t)
	insertRunning(t, p, "abandoned", -time.Second)
	if rec := p.post(t, "abandoned", `{}`); rec.Code != http.StatusCreated || rec.Header().Get(HeaderIdempotentReplayed) != "" {
		t.Fatalf("take-over = %d %s", rec.Code, rec.Body)
	}
	if rec := p.post(t, "abandoned", `{}`); rec.Header().Get(HeaderIdempotentReplayed) != "true" {
		t.Fatalf("after take-over = %d, not replayed", rec.Code)
	}
	if p.runs.Load() != 1 {
		t.Fatalf("handler ran %d times, want 1", p.runs.Load())
	}
}

func TestIdempotencyGivesUpWaitingOnAStuckKey(t *testing.T) {
	t.Parallel()
	p := newIdemProbe(t)
	p.env.srv.idem.wait = 3 * idemPoll
	insertRunning(t, p, "stuck", time.Hour)
	rec := p.post(t, "stuck", `{}`)
	decodeProblem(t, rec, http.StatusConflict, codeIdempotencyKeyInProgress)
	if rec.Header().Get("Retry-After") == "" {
		t.Error("409 in progress without Retry-After")
	}
	decodeProblem(t, p.post(t, "stuck", `{"other":1}`), http.StatusUnprocessableEntity, codeIdempotencyKeyReused)
	if p.runs.Load() != 0 {
		t.Fatalf("handler ran %d times, want 0", p.runs.Load())
	}
}

func TestIdempotencyWaiterStopsWithItsRequest(t *testing.T) {
	t.Parallel()
	p := newIdemProbe(t)
	insertRunning(t, p, "stuck", time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	p.env.srv.idem.onWait = cancel
	r := jsonRequest(http.MethodPost, "/t/accounts", `{}`, HeaderIdempotencyKey, "stuck")
	r.ctx = ctx
	decodeProblem(t, p.env.do(t, r), http.StatusServiceUnavailable, codeUnavailable)
}

func TestPurgeIdempotencyKeys(t *testing.T) {
	t.Parallel()
	p := newIdemProbe(t)
	ctx := context.Background()
	_, err := p.env.pool.Exec(ctx, `
INSERT INTO idempotency_keys (key_hash, request_hash, state, status, created_at, locked_until) VALUES
  ('\x01', '\x00', 'done',    201,  now() - interval '25 hours', now() - interval '25 hours'),
  ('\x02', '\x00', 'done',    201,  now() - interval '1 hour',   now() - interval '1 hour'),
  ('\x03', '\x00', 'running', NULL, now() - interval '25 hours', now() + interval '1 minute'),
  ('\x04', '\x00', 'running', NULL, now() - interval '25 hours', now() - interval '25 hours')`)
	if err != nil {
		t.Fatal(err)
	}
	n, err := p.env.srv.PurgeIdempotencyKeys(ctx, 24*time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("purge = %d, %v; want 2", n, err)
	}
	var left []byte
	rows, err := p.env.pool.Query(ctx, `SELECT key_hash FROM idempotency_keys ORDER BY key_hash`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k []byte
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		left = append(left, k...)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if !bytes.Equal(left, []byte{0x02, 0x03}) {
		t.Fatalf("left %x, want the fresh answer and the leased key", left)
	}
	if _, err := p.env.srv.PurgeIdempotencyKeys(ctx, 0); err == nil {
		t.Error("purge with olderThan 0 succeeded")
	}
}

package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/consentledger/ledger/domain/account"
)

// parallelAnswers sends n requests at once and returns the answers.
func (l *ledger) parallelAnswers(n int, request func() *http.Request) []answer {
	l.t.Helper()
	out := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		req := request()
		wg.Go(func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				out[i] = answer{raw: err.Error()}
				return
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			out[i] = answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
			_ = json.Unmarshal(raw, &out[i].body)
		})
	}
	wg.Wait()
	return out
}

// TestParallelSameIdempotencyKeyExecutesOnce sends one sign-up sixteen
// times at once with one Idempotency-Key: it executes once (one account in
// the log), and every answer is that account's 201, the first or its
// replay (or, past the wait for the first, 409 idempotency_key_in_progress
// with Retry-After, which a retry turns into the replay).
func TestParallelSameIdempotencyKeyExecutesOnce(t *testing.T) {
	l := newLedger(t, nil)
	body := js(map[string]string{"email": "once@example.com", "password": pw})
	answers := l.parallelAnswers(16, func() *http.Request {
		req, _ := http.NewRequest("POST", l.url+"/v1/accounts", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "sign-up-once")
		return req
	})
	ids := map[any]int{}
	replayed := 0
	for _, a := range answers {
		switch {
		case a.status == 201:
			ids[a.body["accountId"]]++
			if a.header.Get("Idempotent-Replayed") == "true" {
				replayed++
			}
		case a.status == 409 && a.body["code"] == "idempotency_key_in_progress" && a.header.Get("Retry-After") != "":
		default:
			t.Fatalf("answer %d %s", a.status, a.raw)
		}
	}
	var created int
	for _, n := range ids {
		created = n
	}
	if len(ids) != 1 || replayed != created-1 {
		t.Fatalf("accounts answered %v (%d replays): want one account, answered once and replayed to the others", ids, replayed)
	}
	registered := 0
	for _, ev := range readLog(t, l) {
		if ev == account.TypeRegistered {
			registered++
		}
	}
	if registered != 1 {
		t.Fatalf("%d registrations in the log, want 1", registered)
	}
}

// TestParallelWrongPinsThroughTheGateway sends twelve wrong PINs at once
// from an enrolled device: they are counted one by one, so the third blocks
// the account and exactly two answer "wrong PIN" (2312), the other ten
// "blocked" (2317).
func TestParallelWrongPinsThroughTheGateway(t *testing.T) {
	l := newLedger(t, nil)
	l.signIn("pins@example.com", "phone-1")
	d := l.device("pins@example.com", "phone-1")
	d.shortcut("0611111111", "1234")
	body := js(map[string]any{"api": "pims.authentication.otp", "parameters": map[string]any{"type": "withPIN", "pinCode": "9999"}})
	codes := map[float64]int{}
	for _, a := range l.parallelAnswers(12, func() *http.Request {
		req, _ := http.NewRequest("POST", l.url+"/pims/get", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+d.token)
		req.Header.Set("X-Device-Id", d.id)
		return req
	}) {
		e, _ := a.body["error"].(map[string]any)
		if a.status != 200 || a.body["status"] != "FAILED" || e == nil {
			t.Fatalf("answer %d %s", a.status, a.raw)
		}
		code, _ := e["code"].(float64)
		codes[code]++
	}
	if codes[2312] != 2 || codes[2317] != 10 {
		t.Fatalf("SDK codes %v, want 2 × 2312 and 10 × 2317", codes)
	}
	if got := d.get(accountAPI, map[string]any{"actionType": "strong", "type": "isAccountBlocked"})["isAccountBlocked"]; got != "PINBlocked" {
		t.Fatalf("isAccountBlocked = %v, want PINBlocked", got)
	}
}

// readLog lists the types of every event in the log.
func readLog(t *testing.T, l *ledger) []string {
	t.Helper()
	rows, err := l.pool.Query(t.Context(), `SELECT type FROM events ORDER BY position`)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var typ string
		if err := rows.Scan(&typ); err != nil {
			t.Fatal(err)
		}
		out = append(out, typ)
	}
	return out
}

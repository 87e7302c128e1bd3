package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/consentledger/ledger/projections"
)

// Every projection is rebuilt while commands and queries run: no query
// fails or sees a half-built model, and after the swaps each read model is
// what a quiet rebuild gives, row for row.
func TestRebuildEveryProjectionUnderLoad(t *testing.T) {
	l := newLedger(t, nil)
	admin := []string{"Authorization", "Bearer " + adminToken}

	// Known users with a car and a service each; their answers must not
	// change while the read models are rebuilt under them.
	const users = 6
	devs := make([]*device, users)
	for i := range devs {
		email := fmt.Sprintf("known%d@example.com", i)
		l.signIn(email, "d")
		devs[i] = l.device(email, "d")
		vin := fmt.Sprintf("VF1AB0000%08d", i)
		devs[i].rest("POST", "/v1/vehicles", js(map[string]string{"vin": vin}), 201, "")
		devs[i].rest("POST", "/v1/vehicles/"+vin+"/services", `{"service":"vehicleStatus"}`, 201, "")
	}
	paths := []string{"/v1/me", "/v1/vehicles", "/v1/me/consents"}
	query := func(d *device, path string) (int, string) {
		req, _ := http.NewRequest("GET", l.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+d.token)
		req.Header.Set("X-Device-Id", d.id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	want := map[string]string{}
	for i, d := range devs {
		for _, p := range paths {
			status, body := query(d, p)
			if status != 200 {
				t.Fatalf("GET %s: %d %s", p, status, body)
			}
			want[fmt.Sprint(i, p)] = body
		}
	}

	// The load: two writers sign up new accounts (each command settles on
	// the projections), three readers query the known users.
	ctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var queries, writes atomic.Int64
	var mu sync.Mutex
	var failures []string
	fail := func(f string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(f, args...))
		}
	}
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				body := js(map[string]string{"email": fmt.Sprintf("load%d-%d@example.com", w, i), "password": pw})
				resp, err := http.Post(l.url+"/v1/accounts", "application/json", strings.NewReader(body))
				if err != nil {
					fail("sign-up: %v", err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 201 {
					fail("sign-up: HTTP %d", resp.StatusCode)
				}
				writes.Add(1)
			}
		})
	}
	for r := range 3 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				u, p := (i+r)%users, paths[i%len(paths)]
				status, body := query(devs[u], p)
				if status != 200 || body != want[fmt.Sprint(u, p)] {
					fail("GET %s of user %d: %d %s", p, u, status, body)
				}
				queries.Add(1)
			}
		})
	}

	// A rebuild holding the lock answers 409 to a second one.
	job, err := projections.BeginRebuild(context.Background(), l.pool, l.store, projections.Accounts{})
	if err != nil {
		t.Fatal(err)
	}
	l.do("POST", "/v1/admin/projections/accounts/rebuild", "", admin...).want(t, 409, "rebuild_in_progress")
	job.Abandon()

	time.Sleep(200 * time.Millisecond) // the load is running
	var names []string
	for _, p := range l.do("GET", "/v1/admin/projections", "", admin...).want(t, 200, "").body["projections"].([]any) {
		names = append(names, p.(map[string]any)["name"].(string))
	}
	for _, name := range names {
		l.do("POST", "/v1/admin/projections/"+name+"/rebuild", "", admin...).want(t, 202, "")
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		a := l.do("GET", "/v1/admin/projections", "", admin...).want(t, 200, "")
		done := 0
		for _, p := range a.body["projections"].([]any) {
			rb, _ := p.(map[string]any)["rebuild"].(map[string]any)
			if rb != nil && rb["running"] == false {
				if rb["phase"] != projections.PhaseDone {
					t.Fatalf("a rebuild ended %v: %s", rb["phase"], a.raw)
				}
				done++
			}
		}
		if done == len(names) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rebuilds did not finish: %s", a.raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rebuilt := writes.Load()
	// Some load on the swapped tables too (commands may wait on a server
	// whose other transactions hold the log back).
	for writes.Load() < rebuilt+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stopLoad()
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d queries, %d sign-ups; failures: %v", queries.Load(), writes.Load(), failures)
	}
	if queries.Load() < 20 || rebuilt < 1 {
		t.Fatalf("too little load to prove anything: %d queries, %d sign-ups", queries.Load(), writes.Load())
	}
	t.Logf("%d queries and %d sign-ups (%d during the rebuilds)", queries.Load(), writes.Load(), rebuilt)

	// Identical results: the signed-up accounts are all there, and each
	// read model is what a quiet rebuild gives.
	for live := 0; live < len(names); time.Sleep(20 * time.Millisecond) {
		live = 0
		for _, p := range l.do("GET", "/v1/admin/projections", "", admin...).want(t, 200, "").body["projections"].([]any) {
			if p.(map[string]any)["state"] == projections.StateLive {
				live++
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the projections did not catch up after the load")
		}
	}
	if n := count(t, l, `SELECT count(*) FROM accounts`); n != users+int(writes.Load()) {
		t.Fatalf("%d accounts, want %d", n, users+int(writes.Load()))
	}
	for _, p := range []projections.Projection{projections.Accounts{}, projections.Enrollment{}, projections.Vehicles{},
		projections.Steps{}, projections.Clients{}, projections.Consents{}, projections.OAuthTokens{}} {
		before := dumpTables(t, l, p)
		if err := projections.Rebuild(context.Background(), l.pool, l.store, p, nil); err != nil {
			t.Fatal(err)
		}
		if after := dumpTables(t, l, p); !reflect.DeepEqual(before, after) {
			t.Fatalf("%s after the rebuild under load differs from a quiet rebuild", p.Name())
		}
	}
}

func count(t *testing.T, l *ledger, sql string) int {
	t.Helper()
	var n int
	if err := l.pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func dumpTables(t *testing.T, l *ledger, p projections.Projection) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, table := range p.Tables() {
		rows, err := projections.Dump(context.Background(), l.pool, table)
		if err != nil {
			t.Fatal(err)
		}
		out[table] = rows
	}
	return out
}

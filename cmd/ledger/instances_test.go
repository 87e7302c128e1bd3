package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/migrations/dbtest"
	"github.com/consentledger/ledger/projections"
)

// Three `ledger serve` processes on one database: each projection runs on
// one of them, commands sent to the others still settle on it, and when it
// is killed with SIGKILL another takes the projections over and brings them
// live without skipping or applying an event twice (its read models equal a
// rebuild's, and every checkpoint counts each event of the log once).
func TestInstancesTakeOverAfterKill9(t *testing.T) {
	bin := buildLedger(t)
	dbURL := dbtest.URL(t)
	ctx := context.Background()
	procs := make([]*process, 3)
	for i := range procs {
		procs[i] = startServe(t, bin, dbURL, freeAddr(t))
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store, err := eventstore.OpenPostgres(ctx, pool, eventstore.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	names := projectionNames(allProjections())

	// holder waits until one instance runs every projection and returns it.
	holder := func(not int) int {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			st, err := projections.ListStatus(ctx, pool, store, names)
			if err != nil {
				t.Fatal(err)
			}
			owners := map[string]bool{}
			for _, s := range st {
				owners[s.RunningOn] = true
			}
			if len(owners) == 1 && !owners[""] {
				_, pid, _ := strings.Cut(st[0].RunningOn, ":")
				for i, p := range procs {
					if strconv.Itoa(p.cmd.Process.Pid) == pid && i != not {
						return i
					}
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no single instance runs the projections: %+v", st)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	first := holder(-1)

	var acked sync.Map // account id → instance
	var count atomic.Int64
	signUp := func(p *process, email string) (string, error) {
		resp, err := http.Post(p.url+"/v1/accounts", "application/json",
			strings.NewReader(fmt.Sprintf(`{"email":%q,"password":"Correct-Horse-9"}`, email)))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var out struct {
			AccountID string `json:"accountId"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode != 201 {
			return "", fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		acked.Store(out.AccountID, email)
		count.Add(1)
		return out.AccountID, nil
	}
	inAccounts := func(id string) bool {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM accounts WHERE account_id = $1::uuid`, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	// Commands on the instances that do not run the projections settle on
	// the checkpoints the other one writes: their reads see their writes.
	for i := range 12 {
		p := procs[(first+1+i%2)%3]
		id, err := signUp(p, fmt.Sprintf("before%d@example.com", i))
		if err != nil {
			t.Fatal(err)
		}
		if !inAccounts(id) {
			t.Fatalf("sign-up %s answered by another instance than the projections' is not in the read model yet", id)
		}
	}

	// Load on the survivors, then SIGKILL the instance running the projections.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = signUp(procs[(first+1+w%2)%3], fmt.Sprintf("load%d-%d@example.com", w, i))
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	if err := procs[first].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = procs[first].cmd.Process.Wait()
	killed := time.Now()
	// Each projection has a lease of its own: the survivors may share them
	// out. Every projection must be run by a survivor, and by one only (the
	// status names the one session holding its lease).
	killedPid := strconv.Itoa(procs[first].cmd.Process.Pid)
	for deadline := killed.Add(15 * time.Second); ; {
		st, err := projections.ListStatus(ctx, pool, store, names)
		if err != nil {
			t.Fatal(err)
		}
		owners := map[string]bool{}
		takenOver := true
		for _, s := range st {
			_, pid, _ := strings.Cut(s.RunningOn, ":")
			if s.RunningOn == "" || pid == killedPid {
				takenOver = false
			}
			owners[s.RunningOn] = true
		}
		if takenOver {
			t.Logf("%d survivor(s) took the projections over %s after the kill", len(owners), time.Since(killed).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the projections were not taken over: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := time.Since(killed); d > 10*time.Second {
		t.Fatalf("takeover took %s", d)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()

	// Live again, with every acknowledged sign-up.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := projections.ListStatus(ctx, pool, store, names)
		if err != nil {
			t.Fatal(err)
		}
		live := 0
		for _, s := range st {
			if s.State == projections.StateLive {
				live++
			}
		}
		if live == len(names) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("projections not live after the takeover: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	acked.Range(func(id, _ any) bool {
		if !inAccounts(id.(string)) {
			t.Errorf("acknowledged account %s is missing from the read model", id)
		}
		return true
	})
	var events, accounts int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM accounts)`).Scan(&events, &accounts); err != nil {
		t.Fatal(err)
	}
	if accounts != count.Load() {
		t.Fatalf("%d accounts in the read model, %d sign-ups acknowledged", accounts, count.Load())
	}
	rows, err := pool.Query(ctx, `SELECT name, events_applied FROM projection_checkpoints`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name string
		var applied int64
		if err := rows.Scan(&name, &applied); err != nil {
			t.Fatal(err)
		}
		if applied != events {
			t.Errorf("checkpoint of %s counts %d events applied, the log has %d", name, applied, events)
		}
	}
	rows.Close()

	before := readModels(t, dbURL)
	t.Setenv("LEDGER_DATABASE_URL", dbURL)
	t.Setenv("LEDGER_EVENTSTORE_URL", "")
	t.Setenv("LEDGER_DEV", "true") // the servers ran in dev mode: the same development data key
	list, _, err := cli(t, "projections", "list")
	onSurvivors := 0
	for i, p := range procs {
		if i != first {
			onSurvivors += strings.Count(list, fmt.Sprintf(":%d ", p.cmd.Process.Pid))
		}
	}
	if err != nil || !strings.Contains(list, "RUNNING ON") || onSurvivors != len(names) {
		t.Fatalf("projections list: %v\n%s", err, list)
	}
	if _, stderr, err := cli(t, "projections", "rebuild", "--all"); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, stderr)
	}
	if after := readModels(t, dbURL); !reflect.DeepEqual(before, after) {
		t.Fatal("the read models the survivors kept differ from a rebuild")
	}
	t.Logf("%d sign-ups, %d events", count.Load(), events)
}

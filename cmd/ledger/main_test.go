package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/migrations/dbtest"
)

// buildLedger compiles the binary once per test run.
func buildLedger(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ledger")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type process struct {
	cmd    *exec.Cmd
	url    string
	stdout *lockedBuffer
}

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startServe(t *testing.T, bin, dbURL, addr string) *process {
	t.Helper()
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), "LEDGER_DATABASE_URL="+dbURL, "LEDGER_HTTP_ADDR="+addr, "LEDGER_DEV=true",
		"LEDGER_ADMIN_TOKEN=", "LEDGER_EVENTSTORE_URL=")
	p := &process{cmd: cmd, url: "http://" + addr, stdout: &lockedBuffer{}}
	cmd.Stdout = p.stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not answer 200 within 30s (last: %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestServeIsReadyAndStopsOnSIGTERM(t *testing.T) {
	bin := buildLedger(t)
	dbURL := dbtest.URL(t)
	migrate := exec.Command(bin, "migrate")
	migrate.Env = append(os.Environ(), "LEDGER_DATABASE_URL="+dbURL, "LEDGER_ADMIN_TOKEN=", "LEDGER_DEV=")
	out, err := migrate.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "up to date") {
		t.Fatalf("migrate on a migrated database: %v\n%s", err, out)
	}
	noToken := exec.Command(bin, "serve")
	noToken.Env = append(os.Environ(), "LEDGER_DATABASE_URL="+dbURL, "LEDGER_ADMIN_TOKEN=", "LEDGER_DEV=")
	if out, err := noToken.CombinedOutput(); err == nil || !strings.Contains(string(out), "LEDGER_ADMIN_TOKEN is required") {
		t.Fatalf("serve without an admin token outside dev mode: %v\n%s", err, out)
	}
	p := startServe(t, bin, dbURL, freeAddr(t))
	if !strings.Contains(p.stdout.String(), "dev admin token") || !strings.Contains(p.stdout.String(), p.url) {
		t.Fatalf("serve did not print its URL and the dev admin token:\n%s", p.stdout)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop within 20s of SIGTERM")
	}
}

// TestAcknowledgedSignUpsSurviveKill9 kills the server with SIGKILL while
// sign-ups are in flight, starts it again and checks that every sign-up it
// had acknowledged (201) is in the log and in the read model.
func TestAcknowledgedSignUpsSurviveKill9(t *testing.T) {
	bin := buildLedger(t)
	dbURL := dbtest.URL(t)
	addr := freeAddr(t)
	p := startServe(t, bin, dbURL, addr)

	acked := make(chan string, 10000)
	stop := make(chan struct{})
	workers := 4
	finished := make(chan struct{}, workers)
	for w := range workers {
		go func() {
			defer func() { finished <- struct{}{} }()
			client := &http.Client{Timeout: 5 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf(`{"email":"k%d-%d@example.com","password":"Correct-Horse-9"}`, w, i)
				resp, err := client.Post(p.url+"/v1/accounts", "application/json", strings.NewReader(body))
				if err != nil {
					return // the server is gone
				}
				var out struct {
					AccountID string `json:"accountId"`
				}
				_ = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if resp.StatusCode == 201 {
					acked <- out.AccountID
				}
			}
		}()
	}
	for len(acked) < 40 {
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = p.cmd.Process.Wait()
	close(stop)
	for range workers {
		<-finished
	}
	close(acked)

	startServe(t, bin, dbURL, addr)
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	n := 0
	for id := range acked {
		n++
		deadline := time.Now().Add(20 * time.Second)
		for {
			var events, rows int
			err := pool.QueryRow(context.Background(), `
				SELECT (SELECT count(*) FROM events WHERE stream_id = 'account-' || $1::text),
				       (SELECT count(*) FROM accounts WHERE account_id = $1::uuid)`, id).Scan(&events, &rows)
			if err != nil {
				t.Fatal(err)
			}
			if events != 1 {
				t.Fatalf("acknowledged account %s has %d events in the log", id, events)
			}
			if rows == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("acknowledged account %s never reached the read model after restart", id)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("%d acknowledged sign-ups survived kill -9", n)
}

package eventstore_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/eventstore/storetest"
	"github.com/consentledger/ledger/migrations/dbtest"
)

func openPostgres(t *testing.T, url string) *eventstore.Postgres {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s, err := eventstore.OpenPostgres(context.Background(), pool, eventstore.PostgresOptions{BatchSize: 50})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestPostgresContract(t *testing.T) {
	storetest.Run(t, storetest.Config{
		New: func(t *testing.T) eventstore.Store { return openPostgres(t, dbtest.URL(t)) },
		BeginAppend: func(t *testing.T, s eventstore.Store, stream string, ev eventstore.EventData) func() {
			pg := s.(*eventstore.Postgres)
			ctx := context.Background()
			pool := pgPool(t, pg)
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pg.AppendTx(ctx, tx, stream, eventstore.NoStream, ev); err != nil {
				t.Fatal(err)
			}
			return func() {
				if err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
				pg.Committed()
			}
		},
	})
}

// pgPool opens a second pool on the store's database for the open transaction.
func pgPool(t *testing.T, pg *eventstore.Postgres) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), pg.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// TestAcknowledgedAppendsSurviveKill9 runs an appender in a child process,
// kills it with SIGKILL mid-stream and checks that every append it
// acknowledged is in the log, whole: a multi-event append is all or nothing.
func TestAcknowledgedAppendsSurviveKill9(t *testing.T) {
	if os.Getenv("LEDGER_KILL_CHILD_DB") != "" {
		t.Skip("child process")
	}
	url := dbtest.URL(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9Child$", "-test.v")
	cmd.Env = append(os.Environ(), "LEDGER_KILL_CHILD_DB="+url)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]int{}
	scanner := bufio.NewScanner(stdout)
	for scanner.Scan() && len(acked) < 200 {
		if stream, ok := strings.CutPrefix(scanner.Text(), "ack "); ok {
			acked[stream] = 3
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if len(acked) < 200 {
		t.Fatalf("child acknowledged only %d appends before it ended", len(acked))
	}

	s := openPostgres(t, url)
	ctx := context.Background()
	for stream, n := range acked {
		evs, err := eventstore.ReadWholeStream(ctx, s, stream)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != n {
			t.Fatalf("acknowledged stream %s has %d events, want %d", stream, len(evs), n)
		}
	}
	// Unacknowledged appends in flight at the kill are whole or absent.
	var partial int
	err = s.Pool().QueryRow(ctx, `SELECT count(*) FROM (SELECT stream_id FROM events GROUP BY stream_id HAVING count(*) <> 3) p`).Scan(&partial)
	if err != nil || partial != 0 {
		t.Fatalf("%d streams hold a partial append (err %v)", partial, err)
	}
}

// TestKill9Child is the child of TestAcknowledgedAppendsSurviveKill9: it
// appends 3-event batches forever and prints each acknowledgement.
func TestKill9Child(t *testing.T) {
	url := os.Getenv("LEDGER_KILL_CHILD_DB")
	if url == "" {
		t.Skip("only runs as the child of TestAcknowledgedAppendsSurviveKill9")
	}
	s := openPostgres(t, url)
	ctx := context.Background()
	deadline := time.Now().Add(2 * time.Minute) // the parent kills us long before
	for i := 0; time.Now().Before(deadline); i++ {
		stream := fmt.Sprintf("kill-%d-%s", i, uuid.NewString()[:8])
		evs := []eventstore.EventData{storetest.Event("a", 0), storetest.Event("a", 1), storetest.Event("a", 2)}
		if _, err := s.Append(ctx, stream, eventstore.NoStream, evs...); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("ack %s\n", stream)
	}
}

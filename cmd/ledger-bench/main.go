// Command ledger-bench measures the PostgreSQL event log on the machine it
// runs on, next to what the same PostgreSQL server does with the same rows
// and no event-log semantics, so that the log's cost is a ratio rather than a
// number that only means something on the machine where it was taken.
//
// It creates its own database (ledger_bench), migrates it, measures, prints a
// Markdown table and drops the database again. It is the program behind
// `make bench`.
//
//	ledger-bench [-database-url URL] [-duration 3s] [-writers 1,8,32] [-rounds 3] [-warmup 500ms]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/consentledger/ledger/cmd/internal/gcfloor"
)

// defaultDatabaseURL is the local server the tests and `make run` use too.
const defaultDatabaseURL = "postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable"

// benchDatabase is created and dropped by every run, so a run never measures
// a log that earlier runs (or the application) have already filled.
var benchDatabase = "ledger_bench"

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "ledger-bench:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	cfg := DefaultConfig()
	serverURL := os.Getenv("LEDGER_BENCH_DATABASE_URL")
	if serverURL == "" {
		serverURL = defaultDatabaseURL
	}
	writers := joinInts(cfg.Writers)
	esdbWriters := joinInts(cfg.ESDBWriters)
	var cpuProfile string
	flag.StringVar(&serverURL, "database-url", serverURL, "PostgreSQL server to measure (env LEDGER_BENCH_DATABASE_URL); the run creates and drops its own database there")
	flag.StringVar(&benchDatabase, "database-name", benchDatabase, "name of the scratch database the run creates and drops (runs sharing a server need different names)")
	flag.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured time of each side (log, raw) of each cell")
	flag.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "rounds each cell's duration is split into, alternating log and raw")
	flag.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "unmeasured time at the start of each round")
	flag.StringVar(&writers, "writers", writers, "comma-separated concurrent writer counts")
	flag.IntVar(&cfg.SubWriters, "sub-writers", cfg.SubWriters, "writers of the subscription latency measurement")
	flag.IntVar(&cfg.SubRate, "sub-rate", cfg.SubRate, "total events/s the subscription latency writers are paced to")
	flag.IntVar(&cfg.EnrollClients, "enroll-clients", cfg.EnrollClients, "concurrent HTTP clients of the shortcut-enrollment row (0 skips it)")
	flag.IntVar(&cfg.IntrospectClients, "introspect-clients", cfg.IntrospectClients, "concurrent HTTP clients of the introspection row (0 skips it)")
	flag.IntVar(&cfg.ExchangeClients, "exchange-clients", cfg.ExchangeClients, "concurrent HTTP clients of the code-exchange row (0 skips it)")
	flag.IntVar(&cfg.ExchangeCodes, "exchange-codes", cfg.ExchangeCodes, "authorization codes issued for the code-exchange row (the row fails if its clients use them all up)")
	flag.IntVar(&cfg.StepsClients, "steps-clients", cfg.StepsClients, "concurrent HTTP clients of the steps-by-stepsID row (0 skips it)")
	flag.IntVar(&cfg.EnrollAccounts, "enroll-accounts", cfg.EnrollAccounts, "accounts prepared for the shortcut-enrollment row")
	flag.DurationVar(&cfg.ESDBDuration, "esdb-duration", cfg.ESDBDuration, "measured time of each EventStoreDB row: the adapter over the in-process double, not a real server (0 skips them)")
	flag.StringVar(&esdbWriters, "esdb-writers", esdbWriters, "comma-separated writer counts of the EventStoreDB rows")
	flag.IntVar(&cfg.AuditClients, "audit-clients", cfg.AuditClients, "concurrent auditors of the point-in-time row (0 skips the auditor rows)")
	flag.IntVar(&cfg.Projections.RebuildEvents, "rebuild-events", cfg.Projections.RebuildEvents, "events in the log the rebuild row replays (0 skips it)")
	flag.IntVar(&cfg.Projections.LagWriters, "lag-writers", cfg.Projections.LagWriters, "writers of the projection-lag row (0 skips it)")
	flag.BoolVar(&cfg.Projections.Only, "only-projections", false, "run only the projection rows (-rebuild-events, -lag-writers)")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a Go CPU profile of the whole run to this file")
	heapFloor := flag.String("gc-heap-floor", "256MiB", "the garbage collector's heap floor, as ledger serve's LEDGER_GC_HEAP_FLOOR (0 leaves GOGC's pacing alone)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	var err error
	if cfg.Writers, err = parseInts(writers); err != nil {
		return fmt.Errorf("-writers: %w", err)
	}
	if cfg.ESDBWriters, err = parseInts(esdbWriters); err != nil {
		return fmt.Errorf("-esdb-writers: %w", err)
	}
	cfg.Progress = os.Stderr
	floor, err := gcfloor.ParseBytes(*heapFloor)
	if err != nil {
		return fmt.Errorf("-gc-heap-floor: %w", err)
	}
	defer gcfloor.Start(floor).Stop()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	dbURL, drop, err := createDatabase(ctx, serverURL)
	if err != nil {
		return err
	}
	cfg.DatabaseURL = dbURL
	runErr := run(ctx, cfg, os.Stdout)
	// The database goes even when the run failed or was interrupted: it is
	// only ever scratch space.
	return errors.Join(runErr, drop())
}

// createDatabase makes an empty ledger_bench database on the server of
// serverURL and returns its URL and the function that drops it. A database
// left by an interrupted run is dropped first.
func createDatabase(ctx context.Context, serverURL string) (string, func() error, error) {
	dbURL, err := withDatabase(serverURL, benchDatabase)
	if err != nil {
		return "", nil, err
	}
	exec := func(ctx context.Context, sql string) error {
		conn, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			return fmt.Errorf("connect to the server: %w", err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
		return nil
	}
	dropSQL := `DROP DATABASE IF EXISTS ` + benchDatabase + ` WITH (FORCE)`
	if err := exec(ctx, dropSQL); err != nil {
		return "", nil, err
	}
	if err := exec(ctx, `CREATE DATABASE `+benchDatabase); err != nil {
		return "", nil, err
	}
	drop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return exec(ctx, dropSQL)
	}
	return dbURL, drop, nil
}

// withDatabase replaces the database of a postgres:// URL. Key/value
// connection strings are accepted too.
func withDatabase(serverURL, name string) (string, error) {
	if !strings.Contains(serverURL, "://") {
		return serverURL + " dbname=" + name, nil
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		return "", fmt.Errorf("-database-url: %w", err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("no writer count")
	}
	return out, nil
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

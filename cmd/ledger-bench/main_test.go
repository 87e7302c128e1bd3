package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/consentledger/ledger/migrations/dbtest"
)

// TestRun runs every measurement briefly against a database of its own, so
// the benchmark keeps compiling and keeps checking what it claims (every
// append delivered exactly once) as the log changes under it.
func TestRun(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DatabaseURL = dbtest.URL(t)
	cfg.Duration = 200 * time.Millisecond
	cfg.Rounds = 2
	cfg.Warmup = 50 * time.Millisecond
	cfg.Writers = []int{1, 2}
	cfg.SubWriters, cfg.SubRate = 2, 200
	cfg.EnrollClients, cfg.EnrollAccounts, cfg.StepsClients, cfg.IntrospectClients = 2, 20, 2, 2
	// Codes to spare: two clients cannot redeem 600 in a quarter of a
	// second through the log.
	cfg.ExchangeClients, cfg.ExchangeCodes = 2, 600
	cfg.ESDBWriters, cfg.ESDBDuration = []int{1, 2}, 200*time.Millisecond
	cfg.AuditClients, cfg.AuditEvents, cfg.AuditExportEvents = 1, 100, 300
	cfg.Projections = ProjectionsConfig{RebuildEvents: 2000, LagWriters: 2}
	var progress bytes.Buffer
	cfg.Progress = &progress

	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, cfg, &out); err != nil {
		t.Fatalf("run: %v\nprogress:\n%s", err, progress.String())
	}
	report := out.String()
	t.Log("\n" + report)

	rows := tableRows(report, "| writers | events/append | log appends/s")
	if len(rows) != len(cfg.Writers)*len(cfg.Batches) {
		t.Fatalf("table has %d rows, want %d:\n%s", len(rows), len(cfg.Writers)*len(cfg.Batches), report)
	}
	for _, want := range []string{"| 1 | 1 | ", "| 1 | 100 | ", "| 2 | 1 | ", "| 2 | 100 | "} {
		if !strings.Contains(report, want) {
			t.Errorf("no row starting %q", want)
		}
	}
	for _, row := range rows {
		// A cell that measured nothing prints zero rates and a dash ratio.
		if strings.Contains(row, "| 0 |") || strings.Contains(row, "–") {
			t.Errorf("empty measurement: %s", row)
		}
	}
	esdbRows := tableRows(report, "| writers | events/append | adapter appends/s")
	if len(esdbRows) != len(cfg.ESDBWriters) || !strings.HasPrefix(esdbRows[0], "| 1 | 1 | ") || !strings.HasPrefix(esdbRows[1], "| 2 | 1 | ") {
		t.Errorf("want an EventStoreDB row per writer count:\n%s", report)
	}
	for _, row := range esdbRows {
		if strings.Contains(row, "| 0 |") {
			t.Errorf("empty measurement: %s", row)
		}
	}
	if !strings.Contains(report, "EventStoreDB adapter over the in-process double (eventstore/esdbtest): measures the adapter and client, not a real server") {
		t.Errorf("the EventStoreDB rows do not say what they measure:\n%s", report)
	}
	if strings.Count(report, "events delivered") != 2 {
		t.Errorf("want a delivery line per subscriber:\n%s", report)
	}
	for _, want := range []string{"fsync=", "synchronous_commit=", "PostgreSQL 1", "enrollments/s", "pims.subscription.steps by stepsID", "OAuth2 introspection", "OAuth2 code exchanges",
		"Point-in-time consents over HTTP", "History export over HTTP", "Security history export over HTTP"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// tableRows returns the body rows of the Markdown table whose header line
// starts with header.
func tableRows(report, header string) []string {
	var rows []string
	in := false
	for _, line := range strings.Split(report, "\n") {
		switch {
		case strings.HasPrefix(line, header):
			in = true
		case !in || strings.HasPrefix(line, "|--"):
		case strings.HasPrefix(line, "| "):
			rows = append(rows, line)
		default:
			return rows
		}
	}
	return rows
}

func TestLatencyPercentile(t *testing.T) {
	var l latencies
	for i := 1; i <= 100; i++ {
		l = append(l, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := l.percentile(c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := (latencies{}).percentile(50); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
}

func TestRawInsertSQL(t *testing.T) {
	got := rawInsertSQL(2)
	want := `INSERT INTO ` + rawTable + ` (stream_id, revision, event_id, type, data, metadata) VALUES ($1, $2, $3, $4, $5, $6), ($7, $8, $9, $10, $11, $12)`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

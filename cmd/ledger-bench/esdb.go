package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/eventstore/esdbtest"
)

// esdbRow is one row of the EventStoreDB table: single-event appends by
// writers through the adapter.
type esdbRow struct {
	writers int
	res     result
}

// measureESDB times appends through the EventStoreDB adapter to the
// in-process double of eventstore/esdbtest. No EventStoreDB server can be
// assumed where the benchmark runs; the double answers from memory, so the
// figures are what the adapter and the client library (gRPC, protobuf, the
// client's own goroutines) cost per append on this machine, an upper bound
// no real server reaches. The writers are the log rows' writers: a new
// stream every appendsPerStream appends, NoStream then Exact revisions.
func measureESDB(ctx context.Context, cfg Config, logger *slog.Logger, progress io.Writer) ([]esdbRow, error) {
	if cfg.ESDBDuration <= 0 || len(cfg.ESDBWriters) == 0 {
		return nil, nil
	}
	srv, err := esdbtest.Serve()
	if err != nil {
		return nil, fmt.Errorf("EventStoreDB double: %w", err)
	}
	defer srv.Close()
	store, err := eventstore.OpenESDB(ctx, srv.URL(), eventstore.ESDBOptions{Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("EventStoreDB double: %w", err)
	}
	defer store.Close()
	var rows []esdbRow
	for _, w := range cfg.ESDBWriters {
		r, err := measure(ctx, w, cfg.Warmup, cfg.ESDBDuration, func(int) func(context.Context) error {
			return logWriter(store, newEventGen("benchconsent"), 1)
		})
		if err != nil {
			return nil, fmt.Errorf("EventStoreDB adapter, %d writers: %w", w, err)
		}
		rows = append(rows, esdbRow{writers: w, res: r})
		fmt.Fprintf(progress, "%2d writers × %3d: EventStoreDB adapter over the in-process double %8.0f appends/s (p50 %s, p99 %s)\n",
			w, 1, r.perSecond(), ms(r.lat.percentile(50)), ms(r.lat.percentile(99)))
	}
	return rows, nil
}

// writeESDBReport prints the EventStoreDB rows after everything else, so
// that the report about the PostgreSQL log reads as it always has.
func writeESDBReport(w io.Writer, cfg Config, rows []esdbRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "EventStoreDB adapter over the in-process double (eventstore/esdbtest): measures the adapter and client, not a real server. Single-event appends of the events above, each writer starting a new stream every %d appends, %s per row after a %s warm-up:\n\n",
		appendsPerStream, cfg.ESDBDuration, cfg.Warmup)
	fmt.Fprintln(w, "| writers | events/append | adapter appends/s | adapter events/s | p50 | p99 |")
	fmt.Fprintln(w, "|--------:|--------------:|------------------:|-----------------:|----:|----:|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %d | 1 | %.0f | %.0f | %s | %s |\n",
			r.writers, r.res.perSecond(), r.res.perSecond(), ms(r.res.lat.percentile(50)), ms(r.res.lat.percentile(99)))
	}
}

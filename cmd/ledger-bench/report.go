package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// targetRatio is what the project promises: 32 writers of single-event
// appends reach at least this share of the raw insert rate of the same
// server, measured in the same run.
const (
	targetWriters = 32
	targetBatch   = 1
	targetRatio   = 0.60
)

// The introspection row's target: requests per second at 64
// concurrent clients, and their p99.
const (
	targetIntrospections = 20000
	targetIntrospectP99  = 5 * time.Millisecond
)

// facts are the conditions the figures hold under. Durable commits
// (fsync, synchronous_commit) dominate single-event appends, so a table
// without them says little.
type facts struct {
	cpus, gomaxprocs int
	goVersion        string
	postgres         string
	settings         []setting
	dataBytes        int
	metaBytes        int
}

type setting struct{ name, value string }

func machineFacts(ctx context.Context, pool *pgxpool.Pool) (facts, error) {
	f := facts{cpus: runtime.NumCPU(), gomaxprocs: runtime.GOMAXPROCS(0), goVersion: runtime.Version()}
	if err := pool.QueryRow(ctx, `SELECT version()`).Scan(&f.postgres); err != nil {
		return f, fmt.Errorf("server version: %w", err)
	}
	for _, name := range []string{"fsync", "synchronous_commit", "wal_sync_method", "commit_delay", "shared_buffers"} {
		var v string
		if err := pool.QueryRow(ctx, `SELECT current_setting($1)`, name).Scan(&v); err != nil {
			return f, fmt.Errorf("setting %s: %w", name, err)
		}
		f.settings = append(f.settings, setting{name, v})
	}
	g := newEventGen("benchconsent")
	g.newStream()
	e := g.events(1)[0]
	meta, err := json.Marshal(e.Metadata)
	if err != nil {
		return f, err
	}
	f.dataBytes, f.metaBytes = len(e.Data), len(meta)
	return f, nil
}

// writeReport prints Markdown that can be pasted into the README as is.
func writeReport(w io.Writer, cfg Config, f facts, cells []cell, subs []subResult, enroll, steps *enrollResult, introspect *introspectResult, exchange *enrollResult) {
	fmt.Fprintf(w, "### Event log benchmark\n\n")
	fmt.Fprintf(w, "- Machine: %d CPUs (GOMAXPROCS %d), %s/%s, %s\n", f.cpus, f.gomaxprocs, runtime.GOOS, runtime.GOARCH, f.goVersion)
	fmt.Fprintf(w, "- PostgreSQL: %s\n", f.postgres)
	settings := make([]string, len(f.settings))
	for i, s := range f.settings {
		settings[i] = s.name + "=" + s.value
	}
	fmt.Fprintf(w, "- Settings: %s\n", strings.Join(settings, ", "))
	fmt.Fprintf(w, "- Events: %d-byte JSON data, %d-byte JSON metadata; each writer starts a new stream every %d appends (NoStream, then Exact revisions)\n",
		f.dataBytes, f.metaBytes, appendsPerStream)
	fmt.Fprintf(w, "- Each cell: %s measured per side in %d rounds alternating log and raw, each after a %s warm-up. Raw: the same rows into a table with the same columns and only an identity primary key, one autocommit INSERT (multi-row for batches) per append\n\n",
		cfg.Duration, cfg.Rounds, cfg.Warmup)

	fmt.Fprintln(w, "| writers | events/append | log appends/s | log events/s | p50 | p99 | raw rows/s | log ÷ raw |")
	fmt.Fprintln(w, "|--------:|--------------:|--------------:|-------------:|----:|----:|-----------:|----------:|")
	for _, c := range cells {
		logEvents := c.log.perSecond() * float64(c.batch)
		rawRows := c.raw.perSecond() * float64(c.batch)
		fmt.Fprintf(w, "| %d | %d | %.0f | %.0f | %s | %s | %.0f | %s |\n",
			c.writers, c.batch, c.log.perSecond(), logEvents,
			ms(c.log.lat.percentile(50)), ms(c.log.lat.percentile(99)), rawRows, ratio(logEvents, rawRows))
	}
	fmt.Fprintln(w)

	if len(subs) > 0 {
		reached := float64(subs[0].appended) / cfg.Duration.Seconds()
		fmt.Fprintf(w, "Subscription delivery, %d writers paced to %d events/s for %s (reached %.0f events/s):\n\n",
			cfg.SubWriters, cfg.SubRate, cfg.Duration, reached)
		for _, s := range subs {
			fmt.Fprintf(w, "- %s: %d of %d events delivered, latency p50 %s, p99 %s, max %s\n",
				s.name, s.delivered, s.appended, ms(s.lat.percentile(50)), ms(s.lat.percentile(99)), ms(s.lat.max()))
		}
		if reached < 0.95*float64(cfg.SubRate) {
			// Below the pace the latency is mostly queueing for a saturated
			// server, not delivery; say so rather than let it pass as such.
			fmt.Fprintln(w, "- the writers could not hold the pace on this machine: these latencies include appends queueing on a saturated server; a lower -sub-rate measures delivery alone")
		}
		fmt.Fprintln(w)
	}

	if enroll != nil {
		fmt.Fprintf(w, "Shortcut enrollment over HTTP (SMS request + enrollWithPhoneNumber, argon2id for code and PIN, projections live), %d concurrent clients for %s: %.1f enrollments/s, p50 %s, p99 %s\n\n",
			enroll.clients, cfg.Duration, enroll.perSecond(), ms(enroll.lat.percentile(50)), ms(enroll.lat.percentile(99)))
	}
	if introspect != nil {
		fmt.Fprintf(w, "OAuth2 introspection over HTTP (RFC 7662, client-authenticated, answered from the in-memory token-validity model), %d concurrent clients for %s each, target %d/s with p99 %s:\n\n",
			introspect.lean.clients, cfg.Duration, targetIntrospections, ms(targetIntrospectP99))
		for _, row := range []struct {
			client string
			r      enrollResult
		}{
			{"Go's net/http client, JSON answer decoded", introspect.netHTTP},
			{"load generator's client (one keep-alive connection each, status and body checked)", introspect.lean},
		} {
			met := "not met"
			if row.r.perSecond() >= targetIntrospections && row.r.lat.percentile(99) <= targetIntrospectP99 {
				met = "met"
			}
			fmt.Fprintf(w, "- %s: %.0f requests/s, p50 %s, p99 %s (%s of the rate; target %s)\n",
				row.client, row.r.perSecond(), ms(row.r.lat.percentile(50)), ms(row.r.lat.percentile(99)),
				ratio(row.r.perSecond(), targetIntrospections), met)
		}
		fmt.Fprintln(w)
	}
	if exchange != nil {
		fmt.Fprintf(w, "OAuth2 code exchanges over HTTP (authorization_code with PKCE S256 at /oauth2/token, HTTP Basic; each appends code-used and token-issued facts and waits for the read models), %d concurrent clients for %s: %.0f exchanges/s, p50 %s, p99 %s\n\n",
			exchange.clients, cfg.Duration, exchange.perSecond(), ms(exchange.lat.percentile(50)), ms(exchange.lat.percentile(99)))
	}
	if steps != nil {
		fmt.Fprintf(w, "pims.subscription.steps by stepsID over HTTP (remoteCommands, three steps, from the steps cache), %d concurrent clients for %s: %.0f requests/s, p50 %s, p99 %s\n\n",
			steps.clients, cfg.Duration, steps.perSecond(), ms(steps.lat.percentile(50)), ms(steps.lat.percentile(99)))
	}

	for _, c := range cells {
		if c.writers != targetWriters || c.batch != targetBatch {
			continue
		}
		r := c.log.perSecond() / c.raw.perSecond()
		verdict := "met"
		if !(r >= targetRatio) {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "Target (%d writers × %d event ≥ %.0f%% of the raw insert rate): %.0f%%, %s.\n",
			targetWriters, targetBatch, 100*targetRatio, 100*r, verdict)
	}
}

// ms prints a latency in milliseconds with the precision that matters at
// that size.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

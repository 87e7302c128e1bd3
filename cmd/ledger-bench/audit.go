package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/api"
	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/domain/security"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

// auditRows are the auditor rows of the report.
type auditRows struct {
	pitEvents, exportEvents int
	pit                     enrollResult // point-in-time answers
	export                  result       // one entry per whole export
	security                result       // one entry per whole security export
}

// Targets of the auditor rows.
const (
	targetPITp99       = 20 * time.Millisecond
	targetExportPerSec = 50_000
)

// measureAudit serves the API over the sealed log, as serve wires it, with
// the subject index live, and measures what auditors ask: the consents of
// a subject with cfg.AuditEvents events at an instant in the middle of its
// history (cfg.AuditClients concurrent auditors), and the NDJSON export of
// a subject with cfg.AuditExportEvents events (one auditor, whole exports
// back to back), and the NDJSON export of the security history with
// cfg.AuditExportEvents source limits, each on a stream of its own. The
// subjects' events (grants and revocations to several partners) and the
// source limits are appended to the log directly and not measured.
func measureAudit(ctx context.Context, cfg Config, pool *pgxpool.Pool, inner eventstore.Store, logger *slog.Logger, progress io.Writer) (*auditRows, error) {
	if cfg.AuditClients <= 0 {
		return nil, nil
	}
	master := make([]byte, 32)
	_, _ = rand.Read(master)
	keys, err := eventstore.NewKeyring(pool, master)
	if err != nil {
		return nil, err
	}
	store := eventstore.Seal(inner, keys, commands.PersonalData{})
	pitSubject, middle, err := appendSubject(ctx, store, cfg.AuditEvents)
	if err != nil {
		return nil, err
	}
	exportSubject, _, err := appendSubject(ctx, store, cfg.AuditExportEvents)
	if err != nil {
		return nil, err
	}
	if err := appendSourceLimits(ctx, store, cfg.AuditExportEvents); err != nil {
		return nil, err
	}

	runner := projections.NewRunner(pool, store, logger, nil, projections.Subjects{}, projections.SecurityEvents{})
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: deferred calls run last first
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { _ = runner.Run(rctx) })
	head, err := store.Head(ctx)
	if err != nil {
		return nil, err
	}
	wctx, stop := context.WithTimeout(ctx, 5*time.Minute)
	err = runner.WaitFor(wctx, head)
	stop()
	if err != nil {
		return nil, fmt.Errorf("subject index catching up: %w", err)
	}

	h := commands.New(commands.Deps{Store: store, Consistency: runner, Logger: logger})
	server := api.New(api.Config{AdminToken: benchAdminToken}, api.Deps{Pool: pool, Logger: logger})
	api.Mount(server, api.App{Commands: h, Pool: pool, Store: store, Runner: runner})
	srv := httptest.NewServer(server.Handler())
	defer srv.Close()
	b := &benchServer{url: srv.URL, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	issued, err := b.post(ctx, "/v1/admin/auditors", "application/json", `{"name":"bench"}`, "Bearer "+benchAdminToken, "")
	if err != nil {
		return nil, fmt.Errorf("issue an auditor key: %w", err)
	}
	auth := "Bearer " + issued["key"].(string)

	rows := &auditRows{pitEvents: cfg.AuditEvents, exportEvents: cfg.AuditExportEvents}
	pitPath := "/v1/audit/accounts/" + pitSubject.String() + "/consents?asOf=" + middle.UTC().Format(time.RFC3339Nano)
	r, err := measure(ctx, cfg.AuditClients, cfg.Warmup, cfg.Duration, func(int) func(context.Context) error {
		return func(ctx context.Context) error {
			body, err := b.get(ctx, pitPath, auth)
			if err == nil && !bytes.Contains(body, []byte(`"status":"granted"`)) {
				err = fmt.Errorf("point-in-time answer without a grant: %.200s", body)
			}
			return err
		}
	})
	if err != nil {
		return nil, fmt.Errorf("point in time: %w", err)
	}
	rows.pit = enrollResult{clients: cfg.AuditClients, result: r}

	// export measures whole NDJSON exports of path back to back, one
	// auditor, each of cfg.AuditExportEvents lines.
	export := func(path string) (result, error) {
		return measure(ctx, 1, cfg.Warmup, cfg.Duration, func(int) func(context.Context) error {
			return func(ctx context.Context) error {
				n, err := b.countLines(ctx, path, auth)
				if err == nil && n != cfg.AuditExportEvents {
					err = fmt.Errorf("export of %s: %d lines, want %d", path, n, cfg.AuditExportEvents)
				}
				return err
			}
		})
	}
	if rows.export, err = export("/v1/audit/accounts/" + exportSubject.String() + "/events"); err != nil {
		return nil, fmt.Errorf("history export: %w", err)
	}
	if rows.security, err = export("/v1/audit/security/events"); err != nil {
		return nil, fmt.Errorf("security export: %w", err)
	}
	fmt.Fprintf(progress, "point in time, %d auditors: %.0f/s, p50 %s, p99 %s; history export: %.0f events/s; security export: %.0f events/s\n",
		cfg.AuditClients, rows.pit.perSecond(), ms(rows.pit.lat.percentile(50)), ms(rows.pit.lat.percentile(99)),
		exportRate(rows.export, cfg.AuditExportEvents), exportRate(rows.security, cfg.AuditExportEvents))
	return rows, nil
}

// exportRate is the events per second of whole exports made back to back
// by one auditor: the events they carried over the time they took. A count
// of the exports finished in the window would move in steps of a whole
// export (a few hundred milliseconds of a 3 s window) and count the one the
// warm-up began.
func exportRate(r result, events int) float64 {
	var busy time.Duration
	for _, d := range r.lat {
		busy += d
	}
	if busy <= 0 {
		return 0
	}
	return float64(len(r.lat)*events) / busy.Seconds()
}

// auditPartners is how many partners a bench subject answers: its events
// spread over that many grant streams (plus its account stream).
const auditPartners = 10

// appendSubject appends the history of one subject of n events: an
// account, then grants and revocations to auditPartners partners, round
// robin, with event times one second apart. It returns the subject and an
// instant in the middle of its history, when every partner is granted.
func appendSubject(ctx context.Context, store eventstore.Store, n int) (uuid.UUID, time.Time, error) {
	id := uuid.New()
	start := time.Now().Add(-time.Duration(n) * time.Second)
	meta := func(i int) eventstore.Metadata {
		return eventstore.Metadata{Actor: "account:" + id.String(), OccurredAt: start.Add(time.Duration(i) * time.Second)}
	}
	data, _ := json.Marshal(account.Registered{AccountID: id, Email: id.String() + "@bench.example", PasswordHash: "bench"})
	if _, err := store.Append(ctx, account.Stream(id), eventstore.NoStream,
		eventstore.EventData{ID: uuid.New(), Type: account.TypeRegistered, Data: data, Metadata: meta(0)}); err != nil {
		return id, start, err
	}
	clients := make([]uuid.UUID, auditPartners)
	for i := range clients {
		clients[i] = uuid.New()
	}
	// Each round of 2×auditPartners events grants every partner, then
	// revokes every one; "middle" falls after a round's grants.
	perStream := make(map[uuid.UUID][]eventstore.EventData)
	rounds := (n - 1) / (2 * auditPartners)
	i := 1
	var middle time.Time
	for round := range rounds {
		for _, granted := range []bool{true, false} {
			for _, c := range clients {
				g := consent.GrantID(id, c)
				var ev eventstore.EventData
				if granted {
					data, _ := json.Marshal(consent.Granted{GrantID: g, AccountID: id, ClientID: c, Controller: "Bench partner",
						Scopes: []string{consent.ScopeProfile, consent.ScopeVehicleStatus}, NoticeVersion: "2026-01", CollectionMethod: "bench"})
					ev = eventstore.EventData{ID: uuid.New(), Type: consent.TypeGranted, Data: data, Metadata: meta(i)}
				} else {
					data, _ := json.Marshal(consent.Revoked{GrantID: g, AccountID: id, ClientID: c, Reason: "user"})
					ev = eventstore.EventData{ID: uuid.New(), Type: consent.TypeRevoked, Data: data, Metadata: meta(i)}
				}
				perStream[c] = append(perStream[c], ev)
				i++
			}
			if granted && round == rounds/2 {
				middle = start.Add(time.Duration(i) * time.Second).Add(-time.Second / 2)
			}
		}
	}
	// Appended round by round, so that streams interleave in the log.
	for off := 0; off < 2*rounds; off += 100 {
		for _, c := range clients {
			evs := perStream[c][off:min(off+100, len(perStream[c]))]
			if len(evs) == 0 {
				continue
			}
			if _, err := store.Append(ctx, consent.GrantStream(id, c), eventstore.Any, evs...); err != nil {
				return id, start, err
			}
		}
	}
	// Pad to exactly n with sign-in failures on the account stream.
	for ; i < n; i++ {
		data, _ := json.Marshal(account.SignInFailed{AccountID: id, Reason: "bench", FailuresInRow: 1})
		if _, err := store.Append(ctx, account.Stream(id), eventstore.Any,
			eventstore.EventData{ID: uuid.New(), Type: account.TypeSignInFailed, Data: data, Metadata: meta(i)}); err != nil {
			return id, start, err
		}
	}
	return id, middle, nil
}

// appendSourceLimits appends n source limits, each on the stream of an
// address of its own: the security history's worst case, one log read per
// event.
func appendSourceLimits(ctx context.Context, store eventstore.Store, n int) error {
	start := time.Now().Add(-time.Duration(n) * time.Second)
	for i := range n {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
		at := start.Add(time.Duration(i) * time.Second)
		data, _ := json.Marshal(security.SourceLimited{Source: src, Kind: "password", Failures: 100, LimitedUntil: at.Add(15 * time.Minute)})
		if _, err := store.Append(ctx, security.SourceStream(src), eventstore.Any, eventstore.EventData{ID: uuid.New(),
			Type: security.TypeSourceLimited, Data: data, Metadata: eventstore.Metadata{Actor: "system", OccurredAt: at}}); err != nil {
			return err
		}
	}
	return nil
}

func (b *benchServer) get(ctx context.Context, path, auth string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.url+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", auth)
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %d %.200s", path, resp.StatusCode, body)
	}
	return body, err
}

// countLines reads a whole NDJSON answer, counting its lines.
func (b *benchServer) countLines(ctx context.Context, path, auth string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.url+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", auth)
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %d", path, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
	}
	return n, sc.Err()
}

// writeAuditReport appends the auditor rows to the report.
func writeAuditReport(w io.Writer, cfg Config, r *auditRows) {
	if r == nil {
		return
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	p99 := r.pit.lat.percentile(99)
	fmt.Fprintf(w, "Point-in-time consents over HTTP (GET /v1/audit/accounts/{id}/consents?asOf=, folded from %d grant streams of a %d-event subject, sealed log), %d concurrent auditors for %s: %.0f answers/s, p50 %s, p99 %s (target p99 ≤ %s: %s)\n\n",
		auditPartners, r.pitEvents, r.pit.clients, cfg.Duration, r.pit.perSecond(), ms(r.pit.lat.percentile(50)), ms(p99), ms(targetPITp99), verdict(p99 <= targetPITp99))
	perSec := exportRate(r.export, r.exportEvents)
	fmt.Fprintf(w, "History export over HTTP (GET /v1/audit/accounts/{id}/events, NDJSON, a %d-event subject over %d streams, one auditor, whole exports back to back for %s): %.0f events/s, %d exports, p50 %s per export (target ≥ %d events/s: %s)\n\n",
		r.exportEvents, auditPartners+1, cfg.Duration, perSec, len(r.export.lat), ms(r.export.lat.percentile(50)), targetExportPerSec, verdict(perSec >= targetExportPerSec))
	secPerSec := exportRate(r.security, r.exportEvents)
	fmt.Fprintf(w, "Security history export over HTTP (GET /v1/audit/security/events, NDJSON, %d source limits each on a stream of its own, one auditor, whole exports back to back for %s): %.0f events/s, %d exports, p50 %s per export\n\n",
		r.exportEvents, cfg.Duration, secPerSec, len(r.security.lat), ms(r.security.lat.percentile(50)))
}

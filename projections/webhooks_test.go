package projections_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

var webhookKey = []byte("test webhook key, 32 bytes long!")

// webhookClock is the senders' clock: tests move it, nothing else does.
type webhookClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *webhookClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *webhookClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// partner is a client's webhook endpoint; status decides the answer to the
// n-th request (from 1).
type partner struct {
	srv    *httptest.Server
	status func(n int) int

	mu  sync.Mutex
	got []hook
}

type hook struct {
	event, delivery, signature string
	body                       []byte
	status                     int
}

func newPartner(t *testing.T, status func(n int) int) *partner {
	t.Helper()
	p := &partner{status: status}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		code := http.StatusNoContent
		if p.status != nil {
			code = p.status(len(p.got) + 1)
		}
		p.got = append(p.got, hook{event: r.Header.Get("X-Ledger-Event"), delivery: r.Header.Get("X-Ledger-Delivery"),
			signature: r.Header.Get("X-Ledger-Signature"), body: body, status: code})
		p.mu.Unlock()
		w.WriteHeader(code)
		_, _ = io.WriteString(w, "partner's answer, never recorded")
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *partner) hooks() []hook {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got)
}

func (p *partner) delivered() []hook {
	var out []hook
	for _, h := range p.hooks() {
		if h.status/100 == 2 {
			out = append(out, h)
		}
	}
	return out
}

// signature is the documented contract, computed without the sender: the
// client's key is HMAC-SHA256(server key, "webhook-signing-key/"+clientId),
// the signature HMAC-SHA256(client key, body).
func signature(client uuid.UUID, body []byte) string {
	k := hmac.New(sha256.New, webhookKey)
	k.Write([]byte("webhook-signing-key/" + client.String()))
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func newSender(pool *pgxpool.Pool, clock *webhookClock) *projections.WebhookSender {
	s := projections.NewWebhookSender(pool, webhookKey, slog.New(slog.DiscardHandler))
	s.Clock = clock
	s.PollInterval = 5 * time.Millisecond
	return s
}

// runSender runs s until the test ends or the returned stop is called.
func runSender(t *testing.T, s *projections.WebhookSender) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("sender: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func appendEvent(t *testing.T, s eventstore.Store, stream, typ string, payload any) (eventstore.EventData, eventstore.Position) {
	t.Helper()
	ev := event(typ, payload)
	res, err := s.Append(context.Background(), stream, eventstore.Any, ev)
	if err != nil {
		t.Fatal(err)
	}
	return ev, res.Position
}

func registerClient(t *testing.T, s eventstore.Store, webhookURL string) uuid.UUID {
	t.Helper()
	id := uuid.New()
	reg, err := consent.NewClientRegistration(id, "Partner", []string{"https://partner.example/cb"},
		[]string{consent.ScopeProfile, consent.ScopeVehicleStatus}, nil, false, false, "secret-hash", webhookURL)
	if err != nil {
		t.Fatal(err)
	}
	appendEvent(t, s, consent.ClientStream(id), consent.TypeClientRegistered, reg)
	return id
}

func grant(t *testing.T, s eventstore.Store, account, client uuid.UUID) (eventstore.EventData, eventstore.Position) {
	t.Helper()
	return appendEvent(t, s, consent.GrantStream(account, client), consent.TypeGranted, consent.Granted{
		GrantID: consent.GrantID(account, client), AccountID: account, ClientID: client, Controller: "Partner",
		Scopes: []string{consent.ScopeProfile, consent.ScopeVehicleStatus}, VINs: []string{"VF1AB000123456789"},
		NoticeVersion: "2026-01", CollectionMethod: "hosted-prompt",
	})
}

func revoke(t *testing.T, s eventstore.Store, account, client uuid.UUID) (eventstore.EventData, eventstore.Position) {
	t.Helper()
	return appendEvent(t, s, consent.GrantStream(account, client), consent.TypeRevoked, consent.Revoked{
		GrantID: consent.GrantID(account, client), AccountID: account, ClientID: client, Reason: "user",
	})
}

type deliveryState struct {
	Status     string
	Attempts   int
	Next       time.Time
	Delivered  *time.Time
	LastError  *string
	EventType  string
	ClientID   uuid.UUID
	OccurredAt time.Time
}

func deliveryRow(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) deliveryState {
	t.Helper()
	var d deliveryState
	err := pool.QueryRow(context.Background(), `
		SELECT status, attempts, next_attempt_at, delivered_at, last_error, event_type, client_id, occurred_at
		FROM webhook_deliveries WHERE delivery_id = $1`, id).
		Scan(&d.Status, &d.Attempts, &d.Next, &d.Delivered, &d.LastError, &d.EventType, &d.ClientID, &d.OccurredAt)
	if err != nil {
		t.Fatalf("delivery %s: %v", id, err)
	}
	return d
}

func TestWebhooksDeliverSignedInOrderPerClient(t *testing.T) {
	e := newEnv(t)
	r, _ := start(t, e, projections.Webhooks{})
	p := newPartner(t, nil)
	client := registerClient(t, e.store, p.srv.URL+"/ledger-hooks")
	silent := registerClient(t, e.store, "") // no webhook: nothing queued for it
	account := uuid.New()

	granted, _ := grant(t, e.store, account, client)
	grant(t, e.store, account, silent)
	// A token revocation: only clientId and accountId are read; the token
	// signatures never travel.
	tokenRevoked, _ := appendEvent(t, e.store, "oauth-"+uuid.NewString(), "consent.token-revoked.v1", map[string]any{
		"requestId": uuid.NewString(), "clientId": client, "accountId": account, "kind": "access_token",
		"signatures": []string{"c2lnbmF0dXJl"}, "reason": "revoked"})
	revoked, pos := revoke(t, e.store, account, client)
	waitFor(t, r, pos)

	if n := count(t, e.pool, `SELECT count(*) FROM webhook_deliveries`); n != 3 {
		t.Fatalf("%d deliveries queued, want 3 (none for the client without a webhook)", n)
	}
	if n := count(t, e.pool, `SELECT count(*) FROM webhook_deliveries WHERE client_id = '`+silent.String()+`'`); n != 0 {
		t.Fatalf("%d deliveries for a client without a webhook", n)
	}
	// Queued at the event's time: the row is the projection's, rebuilt alike.
	if d := deliveryRow(t, e.pool, granted.ID); d.Status != "pending" || d.Attempts != 0 || !d.Next.Equal(at) || !d.OccurredAt.Equal(at) {
		t.Fatalf("queued delivery %+v, want pending, 0 attempts, due at the event's time", d)
	}

	clock := &webhookClock{t: at.Add(time.Minute)}
	sender := newSender(e.pool, clock)
	runSender(t, sender)
	waitUntil(t, "three deliveries", func() bool { return len(p.hooks()) >= 3 })

	got := p.hooks()
	if len(got) != 3 {
		t.Fatalf("%d requests, want 3", len(got))
	}
	want := []struct {
		ev  eventstore.EventData
		typ string
	}{{granted, "consent.granted"}, {tokenRevoked, "token.revoked"}, {revoked, "consent.revoked"}}
	for i, w := range want {
		h := got[i]
		if h.event != w.typ || h.delivery != w.ev.ID.String() {
			t.Fatalf("request %d: %s %s, want %s %s (log order per client)", i, h.event, h.delivery, w.typ, w.ev.ID)
		}
		if h.signature != signature(client, h.body) {
			t.Fatalf("request %d: signature %q does not verify", i, h.signature)
		}
		var body map[string]any
		if err := json.Unmarshal(h.body, &body); err != nil {
			t.Fatal(err)
		}
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range body {
				if !yield(k) {
					return
				}
			}
		})
		wantKeys := []string{"accountId", "clientId", "id", "occurredAt", "type"}
		if w.typ == "consent.granted" {
			wantKeys = []string{"accountId", "clientId", "id", "occurredAt", "scopes", "type"}
		}
		if !slices.Equal(keys, wantKeys) {
			t.Fatalf("request %d carries %v, want only %v (ids, never VINs or tokens)", i, keys, wantKeys)
		}
		if body["id"] != w.ev.ID.String() || body["type"] != w.typ || body["occurredAt"] != "2026-03-01T12:00:00Z" ||
			body["accountId"] != account.String() || body["clientId"] != client.String() {
			t.Fatalf("request %d body %s", i, h.body)
		}
	}
	if !strings.Contains(string(got[0].body), `"scopes":["account:profile","vehicle:status"]`) {
		t.Fatalf("grant body %s lacks its scopes", got[0].body)
	}
	if hex.EncodeToString(sender.SigningKey(client)) == hex.EncodeToString(sender.SigningKey(silent)) {
		t.Fatal("two clients share a signing key")
	}

	waitUntil(t, "deliveries recorded", func() bool {
		return count(t, e.pool, `SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'`) == 3
	})
	if d := deliveryRow(t, e.pool, revoked.ID); d.Attempts != 1 || d.Delivered == nil || !d.Delivered.Equal(clock.Now()) || d.LastError != nil {
		t.Fatalf("delivered row %+v", d)
	}
}

func TestWebhooksRetryWithBackoffThenDeliverOnce(t *testing.T) {
	e := newEnv(t)
	r, _ := start(t, e, projections.Webhooks{})
	p := newPartner(t, func(n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	client := registerClient(t, e.store, p.srv.URL)
	granted, pos := grant(t, e.store, uuid.New(), client)
	waitFor(t, r, pos)

	ctx := context.Background()
	clock := &webhookClock{t: at}
	sender := newSender(e.pool, clock)
	step := func(want int) {
		t.Helper()
		n, err := sender.DeliverDue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Fatalf("at %s: %d deliveries sent, want %d", clock.Now().Format(time.TimeOnly), n, want)
		}
	}

	step(1) // 503
	d := deliveryRow(t, e.pool, granted.ID)
	if d.Status != "pending" || d.Attempts != 1 || !d.Next.Equal(at.Add(time.Second)) || d.LastError == nil || *d.LastError != "HTTP 503" {
		t.Fatalf("after a 503: %+v, want a retry in 1s with the status recorded", d)
	}
	step(0)
	clock.Advance(999 * time.Millisecond)
	step(0)
	clock.Advance(time.Millisecond)
	step(1) // 503 again: the wait doubles
	if d := deliveryRow(t, e.pool, granted.ID); d.Attempts != 2 || !d.Next.Equal(at.Add(3*time.Second)) {
		t.Fatalf("after the second 503: %+v, want the next attempt 2s later", d)
	}
	clock.Advance(time.Second)
	step(0)
	clock.Advance(time.Second)
	step(1) // 200
	d = deliveryRow(t, e.pool, granted.ID)
	if d.Status != "delivered" || d.Attempts != 3 || d.Delivered == nil || !d.Delivered.Equal(at.Add(3*time.Second)) || d.LastError != nil {
		t.Fatalf("after the 200: %+v", d)
	}
	clock.Advance(24 * time.Hour)
	step(0)
	if got := p.hooks(); len(got) != 3 || len(p.delivered()) != 1 {
		t.Fatalf("%d requests, %d answered 2xx; want 3 and 1", len(got), len(p.delivered()))
	}
	for _, h := range p.hooks() {
		if h.delivery != granted.ID.String() || h.signature != signature(client, h.body) || string(h.body) != string(p.hooks()[0].body) {
			t.Fatal("a retry differs from the first attempt: same id, body and signature expected")
		}
	}
}

func TestWebhooksPermanentFailureEndsFailed(t *testing.T) {
	e := newEnv(t)
	r, _ := start(t, e, projections.Webhooks{})
	p := newPartner(t, func(int) int { return http.StatusInternalServerError })
	client := registerClient(t, e.store, p.srv.URL)
	account := uuid.New()
	granted, _ := grant(t, e.store, account, client)
	revoked, pos := revoke(t, e.store, account, client)
	waitFor(t, r, pos)

	ctx := context.Background()
	clock := &webhookClock{t: at}
	sender := newSender(e.pool, clock)
	if sender.MaxAttempts != 12 {
		t.Fatalf("default attempts %d, want 12", sender.MaxAttempts)
	}
	sender.MaxAttempts = 14 // far enough to reach the one-hour cap
	var waits []time.Duration
	for attempt := 1; attempt <= 14; attempt++ {
		n, err := sender.DeliverDue(ctx)
		if err != nil || n != 1 {
			t.Fatalf("attempt %d: %d sent, %v", attempt, n, err)
		}
		d := deliveryRow(t, e.pool, granted.ID)
		if d.Attempts != attempt || d.LastError == nil || *d.LastError != "HTTP 500" {
			t.Fatalf("attempt %d: %+v, want the status code as the error, never the answer's body", attempt, d)
		}
		if attempt == 14 {
			if d.Status != "failed" {
				t.Fatalf("after %d attempts: %s, want failed", attempt, d.Status)
			}
			break
		}
		// The revocation waits behind the grant it ends.
		if n := count(t, e.pool, `SELECT attempts FROM webhook_deliveries WHERE delivery_id = '`+revoked.ID.String()+`'`); n != 0 {
			t.Fatalf("the revocation was tried while the grant was pending (%d attempts)", n)
		}
		wait := d.Next.Sub(clock.Now())
		waits = append(waits, wait)
		clock.Advance(wait - time.Millisecond)
		if n, _ := sender.DeliverDue(ctx); n != 0 {
			t.Fatalf("attempt %d: retried %s early", attempt, time.Millisecond)
		}
		clock.Advance(time.Millisecond)
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600}
	for i := range want {
		want[i] *= time.Second
	}
	if !slices.Equal(waits, want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	// Giving up on the grant lets the revocation go (and fail in its turn).
	clock.Advance(48 * time.Hour)
	if n, _ := sender.DeliverDue(ctx); n != 1 {
		t.Fatalf("after the grant failed, %d sent; want the revocation", n)
	}
	if d := deliveryRow(t, e.pool, revoked.ID); d.Attempts != 1 {
		t.Fatalf("revocation %+v", d)
	}
	if got := len(p.hooks()); got != 15 {
		t.Fatalf("%d requests, want 14 + 1", got)
	}
}

func TestWebhooksTransportErrorsRecordNoURL(t *testing.T) {
	e := newEnv(t)
	r, _ := start(t, e, projections.Webhooks{})
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close() // connection refused
	client := registerClient(t, e.store, closed.URL+"/hook?token=partner-secret")
	granted, pos := grant(t, e.store, uuid.New(), client)
	waitFor(t, r, pos)

	sender := newSender(e.pool, &webhookClock{t: at})
	if n, err := sender.DeliverDue(context.Background()); err != nil || n != 1 {
		t.Fatalf("%d sent, %v", n, err)
	}
	d := deliveryRow(t, e.pool, granted.ID)
	if d.Status != "pending" || d.LastError == nil || !strings.Contains(*d.LastError, "refused") || strings.Contains(*d.LastError, "partner-secret") {
		t.Fatalf("after a refused connection: %+v", d)
	}
}

func TestWebhooksTwoSendersDeliverEachOnce(t *testing.T) {
	e := newEnv(t)
	r, _ := start(t, e, projections.Webhooks{})
	p := newPartner(t, nil)
	const clients, perClient = 12, 3
	order := map[string][]string{} // client → its delivery ids in log order
	var pos eventstore.Position
	for range clients {
		client := registerClient(t, e.store, p.srv.URL)
		account := uuid.New()
		for i := range perClient {
			var ev eventstore.EventData
			if i%2 == 0 {
				ev, pos = grant(t, e.store, account, client)
			} else {
				ev, pos = revoke(t, e.store, account, client)
			}
			order[client.String()] = append(order[client.String()], ev.ID.String())
		}
	}
	waitFor(t, r, pos)

	clock := &webhookClock{t: at.Add(time.Hour)}
	a, b := newSender(e.pool, clock), newSender(e.pool, clock)
	a.BatchSize, b.BatchSize = 3, 3
	stopA, stopB := runSender(t, a), runSender(t, b)
	waitUntil(t, "every delivery recorded", func() bool {
		return count(t, e.pool, `SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'`) == clients*perClient
	})
	stopA()
	stopB()

	got := p.hooks()
	if len(got) != clients*perClient {
		t.Fatalf("%d requests for %d deliveries", len(got), clients*perClient)
	}
	seenIDs := map[string]bool{}
	perClientGot := map[string][]string{}
	for _, h := range got {
		if seenIDs[h.delivery] {
			t.Fatalf("delivery %s sent twice", h.delivery)
		}
		seenIDs[h.delivery] = true
		var body projections.WebhookBody
		if err := json.Unmarshal(h.body, &body); err != nil {
			t.Fatal(err)
		}
		if h.signature != signature(body.ClientID, h.body) {
			t.Fatalf("delivery %s: bad signature", h.delivery)
		}
		perClientGot[body.ClientID.String()] = append(perClientGot[body.ClientID.String()], h.delivery)
	}
	if !reflect.DeepEqual(perClientGot, order) {
		t.Fatalf("per-client order %v, want log order %v", perClientGot, order)
	}
	if n := count(t, e.pool, `SELECT count(*) FROM webhook_deliveries WHERE attempts <> 1`); n != 0 {
		t.Fatalf("%d deliveries claimed more than once", n)
	}
}

func TestWebhooksRebuildSendsNothingAgain(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r, _ := start(t, e, projections.Webhooks{})
	p := newPartner(t, nil)
	client := registerClient(t, e.store, p.srv.URL)
	registerClient(t, e.store, p.srv.URL+"/other")
	account := uuid.New()
	grant(t, e.store, account, client)
	_, pos := revoke(t, e.store, account, client)
	waitFor(t, r, pos)

	runSender(t, newSender(e.pool, &webhookClock{t: at.Add(time.Hour)}))
	waitUntil(t, "both delivered", func() bool {
		return count(t, e.pool, `SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'`) == 2
	})
	clients, _ := projections.Dump(ctx, e.pool, "webhook_clients")
	queue, _ := projections.Dump(ctx, e.pool, "webhook_deliveries")

	for range 2 {
		if err := projections.Rebuild(ctx, e.pool, e.store, projections.Webhooks{}, nil); err != nil {
			t.Fatal(err)
		}
		rebuilt, _ := projections.Dump(ctx, e.pool, "webhook_clients")
		if len(clients) != 2 || !reflect.DeepEqual(clients, rebuilt) {
			t.Fatalf("rebuilt webhook_clients %v, live %v", rebuilt, clients)
		}
		after, _ := projections.Dump(ctx, e.pool, "webhook_deliveries")
		if !reflect.DeepEqual(queue, after) {
			t.Fatalf("a rebuild changed the delivery queue:\n%v\n%v", queue, after)
		}
	}

	// The runner goes on after the rebuilds; one new fact, one new request:
	// once it arrives the sender has looked at the queue since the
	// rebuilds, and nothing else was sent.
	regranted, pos := grant(t, e.store, account, client)
	waitFor(t, r, pos)
	waitUntil(t, "the new grant delivered", func() bool {
		return count(t, e.pool, `SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'`) == 3
	})
	got := p.hooks()
	if len(got) != 3 || got[2].delivery != regranted.ID.String() {
		t.Fatalf("%d requests after the rebuilds, want the 2 before and the new grant", len(got))
	}
}

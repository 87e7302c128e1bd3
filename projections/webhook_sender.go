package projections

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/domain"
)

// WebhookSender delivers the partner notifications the Webhooks projection
// queues in webhook_deliveries: a JSON POST to the client's webhook URL with
//
//	X-Ledger-Event:     consent.granted | consent.revoked | token.revoked
//	X-Ledger-Delivery:  the delivery id (the ledger event's id; the body's id)
//	X-Ledger-Signature: sha256=<hex HMAC-SHA256 of the body under SigningKey(clientId)>
//
// Any 2xx answer delivers; anything else (a redirect too: it is not
// followed) is retried after 1s, 2s, 4s … (at most an hour) until
// MaxAttempts POSTs have failed, and the delivery is then marked failed
// with the last status code or transport error. Bodies are never recorded
// or logged, neither the ledger's nor the partner's.
//
// Delivery is at least once: a sender that dies after the partner's answer
// and before recording it sends again. Partners drop repeats by the
// delivery id.
//
// A client's deliveries go out one at a time, in log order: a later one
// waits until every earlier one was delivered or failed, so a partner never
// sees a revocation before the grant it ends. A failing endpoint therefore
// holds back its own client's notifications (about an hour and eight
// minutes with the default attempts), never another client's.
//
// Several senders, in one process or many, may run against one database:
// each claims due rows with FOR UPDATE SKIP LOCKED in a short transaction
// that leases them (the row stays pending, its next attempt pushed past the
// POST's timeout) and POSTs outside any transaction. Holding a row lock
// during the POST would keep a transaction id open for as long as the
// partner takes, and the PostgreSQL log's readers wait for every open
// transaction: all projections would stall behind a slow partner. A sender
// records its result only if the row still holds its claim (the attempt
// count fences it), so a sender whose lease ran out cannot overwrite a newer
// attempt.
//
// next_attempt_at follows the wall clock (Clock), unlike the projections'
// rows: webhook_deliveries is a queue, not a rebuilt read model.
type WebhookSender struct {
	pool *pgxpool.Pool

	// WebhookKey is the server's secret from which every client's signing
	// key derives (see SigningKey). Changing it changes every signature.
	WebhookKey []byte

	// Client sends the POSTs. The default follows no redirect: a partner's
	// answer is judged as given, and a redirect cannot point the ledger at
	// another host.
	Client *http.Client
	// Clock decides what is due and when to retry.
	Clock  domain.Clock
	Logger *slog.Logger
	// MaxAttempts is how many POSTs a delivery gets before it is failed.
	MaxAttempts int
	// Timeout bounds one POST. A claim's lease lasts Timeout plus a minute.
	Timeout time.Duration
	// PollInterval is the wait for new or due deliveries when none is.
	PollInterval time.Duration
	// BatchSize bounds the deliveries claimed, and sent concurrently, at
	// once (each of another client).
	BatchSize int
}

// NewWebhookSender makes a sender with the defaults: 12 attempts, 10 s per
// POST, polling every second, 16 deliveries at once, the system clock.
// Run starts it.
func NewWebhookSender(pool *pgxpool.Pool, webhookKey []byte, logger *slog.Logger) *WebhookSender {
	if logger == nil {
		logger = slog.Default()
	}
	return &WebhookSender{
		pool: pool, WebhookKey: webhookKey, Logger: logger,
		Client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
		Clock: domain.SystemClock{}, MaxAttempts: 12, Timeout: 10 * time.Second,
		PollInterval: time.Second, BatchSize: 16,
	}
}

// SigningKey is the key a client's webhook requests are signed with:
// HMAC-SHA256 under WebhookKey of "webhook-signing-key/" and the client id.
// Deriving it, rather than storing one per client, keeps it out of events
// and tables, and a client's key changes only when the server's key does.
// It is meant for the partner, hex-encoded, with its client registration:
// whatever shows it to the partner calls SigningKey. The purpose label keeps
// it apart from anything else derived from the same server key.
func (s *WebhookSender) SigningKey(clientID uuid.UUID) []byte {
	mac := hmac.New(sha256.New, s.WebhookKey)
	mac.Write([]byte("webhook-signing-key/" + clientID.String()))
	return mac.Sum(nil)
}

// Run delivers until ctx ends. Database errors are logged and retried, never
// returned: webhooks must not stop the server. POSTs under way when ctx ends
// run to their end (at most Timeout) and are recorded, so a shutdown does
// not make partners receive them twice.
func (s *WebhookSender) Run(ctx context.Context) error {
	if len(s.WebhookKey) == 0 {
		return errors.New("webhook sender: no webhook key")
	}
	for {
		n, err := s.DeliverDue(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			s.Logger.Error("claiming webhook deliveries failed", "error", err)
		}
		// After a delivery the next of that client's queue may be due at
		// once: look again without waiting.
		if n > 0 && err == nil {
			continue
		}
		if !sleep(ctx, s.PollInterval) {
			return nil
		}
	}
}

// DeliverDue claims what is due now (at most BatchSize, the head of each
// client's queue), sends it concurrently, records the results, and returns
// how many it claimed. Run calls it in a loop; tests call it to step.
func (s *WebhookSender) DeliverDue(ctx context.Context) (int, error) {
	claimed, err := s.claim(ctx)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	for _, d := range claimed {
		wg.Go(func() { s.deliver(context.WithoutCancel(ctx), d) })
	}
	wg.Wait()
	return len(claimed), nil
}

type delivery struct {
	id        uuid.UUID
	client    uuid.UUID
	url       string
	eventType string
	body      []byte
	attempt   int // this attempt's number, from 1; the claim's fence
}

// claim leases due deliveries in one statement (its own short transaction).
// A delivery qualifies when no earlier delivery of its client is still
// pending: claimed or waiting for a retry, it holds the later ones back.
// Of two senders claiming at once, one locks a row and the other skips it,
// or finds it leased once the first committed (READ COMMITTED re-checks
// next_attempt_at on the locked row).
func (s *WebhookSender) claim(ctx context.Context) ([]delivery, error) {
	now := s.Clock.Now()
	leaseEnd := now.Add(s.Timeout + time.Minute)
	rows, err := s.pool.Query(ctx, `
		WITH due AS (
			SELECT d.delivery_id FROM webhook_deliveries d
			WHERE d.status = 'pending' AND d.next_attempt_at <= $1
			  AND NOT EXISTS (
				SELECT 1 FROM webhook_deliveries e
				WHERE e.client_id = d.client_id AND e.status = 'pending'
				  AND (e.commit_position, e.prepare_position) < (d.commit_position, d.prepare_position))
			ORDER BY d.next_attempt_at, d.commit_position, d.prepare_position
			LIMIT $2
			FOR UPDATE OF d SKIP LOCKED)
		UPDATE webhook_deliveries w
		SET attempts = w.attempts + 1, last_attempt_at = $1, next_attempt_at = $3
		FROM due WHERE w.delivery_id = due.delivery_id
		RETURNING w.delivery_id, w.client_id, w.url, w.event_type, w.body, w.attempts`,
		now, s.BatchSize, leaseEnd)
	if err != nil {
		return nil, fmt.Errorf("claim webhook deliveries: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (delivery, error) {
		var d delivery
		var body string
		err := row.Scan(&d.id, &d.client, &d.url, &d.eventType, &body, &d.attempt)
		d.body = []byte(body)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim webhook deliveries: %w", err)
	}
	return out, nil
}

// deliver POSTs one claimed delivery and records the outcome. ctx is not
// cancelled by shutdown (see Run); the POST is bounded by Timeout.
func (s *WebhookSender) deliver(ctx context.Context, d delivery) {
	log := s.Logger.With("delivery_id", d.id, "client_id", d.client, "event_type", d.eventType, "attempt", d.attempt)
	postErr := s.post(ctx, d)
	now := s.Clock.Now()
	var tag pgconn.CommandTag
	var err error
	switch {
	case postErr == nil:
		tag, err = s.pool.Exec(ctx, `
			UPDATE webhook_deliveries SET status = 'delivered', delivered_at = $3, last_error = NULL
			WHERE delivery_id = $1 AND attempts = $2 AND status = 'pending'`, d.id, d.attempt, now)
		log.Debug("webhook delivered")
	case d.attempt >= s.MaxAttempts:
		tag, err = s.pool.Exec(ctx, `
			UPDATE webhook_deliveries SET status = 'failed', last_error = $3
			WHERE delivery_id = $1 AND attempts = $2 AND status = 'pending'`, d.id, d.attempt, postErr.Error())
		log.Error("webhook delivery failed; giving up", "error", postErr)
	default:
		next := now.Add(webhookBackoff(d.attempt))
		tag, err = s.pool.Exec(ctx, `
			UPDATE webhook_deliveries SET next_attempt_at = $3, last_error = $4
			WHERE delivery_id = $1 AND attempts = $2 AND status = 'pending'`, d.id, d.attempt, next, postErr.Error())
		log.Warn("webhook delivery failed; retrying", "error", postErr, "next_attempt_at", next)
	}
	switch {
	case err != nil:
		// The lease runs out and the delivery is tried again.
		log.Error("recording a webhook delivery's result failed", "error", err)
	case tag.RowsAffected() == 0:
		log.Warn("a webhook delivery's lease ran out before its result was recorded; a later attempt owns it")
	}
}

// webhookBackoff is the wait after the attempt-th failed POST: 1s, 2s,
// 4s … capped at an hour.
func webhookBackoff(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	if attempt > 13 { // 2^12 s already exceeds the cap
		return time.Hour
	}
	return min(time.Second<<(attempt-1), time.Hour)
}

// post sends one delivery. Its error is what is recorded and logged: a
// status code or a transport error, never a body, and never the URL (a
// partner may have put a token in it).
func (s *WebhookSender) post(ctx context.Context, d delivery) error {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(d.body))
	if err != nil {
		return errors.New("invalid webhook URL")
	}
	mac := hmac.New(sha256.New, s.SigningKey(d.client))
	mac.Write(d.body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "consent-ledger-webhooks")
	req.Header.Set("X-Ledger-Event", d.eventType)
	req.Header.Set("X-Ledger-Delivery", d.id.String())
	req.Header.Set("X-Ledger-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := s.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("no answer within %s", s.Timeout)
		}
		return err
	}
	// Drained (a little) so the connection can be reused; never read for
	// anything else.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

package commands

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
)

// WebhookOutbox delivers messages by POSTing them as JSON to a gateway that
// speaks SMTP, SMS or the vehicle channel. Each request carries
// X-Ledger-Signature: sha256=<hex HMAC of the body under the shared secret>.
// Deliveries are queued in memory and retried with exponential backoff; a
// message still undelivered after the last attempt is logged (by channel,
// never by content) and dropped: its code or link can be requested again.
type WebhookOutbox struct {
	URL      string
	Secret   []byte
	Client   *http.Client
	Logger   *slog.Logger
	Attempts int           // default 8
	Backoff  time.Duration // first retry delay, doubling (default 500ms)

	queue  chan Message
	wg     sync.WaitGroup
	stop   context.CancelFunc
	erased erasedAccounts
}

// Forget drops the account's messages: those queued or being retried are
// not sent again, and later ones are not queued (Forgetter).
func (o *WebhookOutbox) Forget(account uuid.UUID) { o.erased.add(account) }

// Start runs the delivery worker until Close.
func (o *WebhookOutbox) Start(ctx context.Context) {
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Attempts <= 0 {
		o.Attempts = 8
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	o.queue = make(chan Message, 10000)
	ctx, o.stop = context.WithCancel(ctx)
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-o.queue:
				o.deliver(ctx, m)
			}
		}
	}()
}

// Send queues m; it never blocks the command that sends it.
func (o *WebhookOutbox) Send(_ context.Context, m Message) {
	if o.erased.has(m.Account) {
		return
	}
	select {
	case o.queue <- m:
	default:
		o.Logger.Error("outbox queue full; message dropped", "channel", m.Channel)
	}
}

// Close stops the worker; queued messages are not delivered.
func (o *WebhookOutbox) Close() {
	if o.stop != nil {
		o.stop()
	}
	o.wg.Wait()
}

func (o *WebhookOutbox) deliver(ctx context.Context, m Message) {
	body, _ := json.Marshal(m)
	mac := hmac.New(sha256.New, o.Secret)
	mac.Write(body)
	signature := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	wait := o.Backoff
	for attempt := 1; attempt <= o.Attempts; attempt++ {
		if o.erased.has(m.Account) {
			return // the account was erased while the message waited
		}
		err := o.post(ctx, body, signature)
		if err == nil {
			return
		}
		if attempt == o.Attempts || ctx.Err() != nil {
			o.Logger.Error("outbox delivery failed; message dropped", "channel", m.Channel, "attempts", attempt, "error", err)
			return
		}
		o.Logger.Warn("outbox delivery failed; retrying", "channel", m.Channel, "attempt", attempt, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait *= 2
	}
}

func (o *WebhookOutbox) post(ctx context.Context, body []byte, signature string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Ledger-Signature", signature)
	resp, err := o.Client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("gateway answered %d", resp.StatusCode)
	}
	return nil
}

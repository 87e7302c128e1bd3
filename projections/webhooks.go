package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/eventstore"
)

// Event types partners receive. They name the fact without a version: the
// body's shape is the contract, and it only ever gains fields.
const (
	WebhookConsentGranted = "consent.granted"
	WebhookConsentRevoked = "consent.revoked"
	WebhookTokenRevoked   = "token.revoked"
)

// typeTokenRevoked is a revoked OAuth2 token. The projection decodes only
// the two ids it needs (tokenRevoked), so it depends on no more of that
// event than the notification carries.
const typeTokenRevoked = "consent.token-revoked.v1"

type tokenRevoked struct {
	ClientID  uuid.UUID `json:"clientId"`
	AccountID uuid.UUID `json:"accountId"`
}

// WebhookBody is the JSON a partner receives: ids and the fact's name and
// time, never personal data beyond ids and never a token. ID is the
// delivery id (the ledger event's id), the same on every retry, so partners
// drop duplicates by it.
type WebhookBody struct {
	ID         uuid.UUID `json:"id"`
	Type       string    `json:"type"`
	OccurredAt time.Time `json:"occurredAt"`
	// AccountID is empty for a token that no account granted (client
	// credentials).
	AccountID string    `json:"accountId,omitempty"`
	ClientID  uuid.UUID `json:"clientId"`
	// Scopes are those granted (consent.granted only).
	Scopes []string `json:"scopes,omitempty"`
}

// Webhooks queues partner notifications: for every grant, revocation and
// token revocation of a client registered with a webhook URL, one row in
// webhook_deliveries, which WebhookSender works off.
//
// The rows are written in the projection's batch transaction, with its
// checkpoint, so a notification is queued exactly once per event and only
// after the event committed: a failed append notifies nobody, and a restart
// neither loses nor repeats one.
//
// The projection finds a client's URL in its own webhook_clients table,
// folded from the registrations it has seen, never in another projection's
// tables: their progress is not its own, and a rebuild must not depend on
// it.
type Webhooks struct{}

func (Webhooks) Name() string { return "webhooks" }

// Tables is only webhook_clients. webhook_deliveries is a queue, not a read
// model: a rebuild must not clear it, or everything would be sent again.
// Re-applying an event whose delivery exists does nothing (its id is the
// event's), so a rebuild enqueues nothing that was enqueued before.
func (Webhooks) Tables() []string { return []string{"webhook_clients"} }

func (Webhooks) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	at := ev.Metadata.OccurredAt.UTC()
	body := WebhookBody{ID: ev.ID, OccurredAt: at}
	var client uuid.UUID
	switch ev.Type {
	case consent.TypeClientRegistered:
		payload, err := consent.Decode(ev.Type, ev.Data)
		if err != nil {
			return err
		}
		e := payload.(*consent.ClientRegistered)
		if e.WebhookURL == "" {
			return nil
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO webhook_clients (client_id, webhook_url, registered_at) VALUES ($1, $2, $3)
			ON CONFLICT (client_id) DO UPDATE SET webhook_url = $2, registered_at = $3`,
			e.ClientID, e.WebhookURL, at)
		return err
	case consent.TypeGranted:
		payload, err := consent.Decode(ev.Type, ev.Data)
		if err != nil {
			return err
		}
		e := payload.(*consent.Granted)
		client, body.Type, body.AccountID, body.Scopes = e.ClientID, WebhookConsentGranted, e.AccountID.String(), e.Scopes
	case consent.TypeRevoked:
		payload, err := consent.Decode(ev.Type, ev.Data)
		if err != nil {
			return err
		}
		e := payload.(*consent.Revoked)
		client, body.Type, body.AccountID = e.ClientID, WebhookConsentRevoked, e.AccountID.String()
	case typeTokenRevoked:
		var e tokenRevoked
		if err := json.Unmarshal(ev.Data, &e); err != nil {
			return fmt.Errorf("webhooks: decode %s: %w", ev.Type, err)
		}
		client, body.Type = e.ClientID, WebhookTokenRevoked
		if e.AccountID != uuid.Nil {
			body.AccountID = e.AccountID.String()
		}
	default:
		return nil
	}
	body.ClientID = client
	data, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("webhooks: encode %s: %w", body.Type, err)
	}
	// A client without a webhook URL selects no row: nothing to queue.
	_, err = tx.Exec(ctx, `
		INSERT INTO webhook_deliveries (delivery_id, client_id, url, event_type, body,
			commit_position, prepare_position, occurred_at, next_attempt_at)
		SELECT $1, client_id, webhook_url, $3, $4, $5, $6, $7, $7
		FROM webhook_clients WHERE client_id = $2
		ON CONFLICT (delivery_id) DO NOTHING`,
		ev.ID, client, body.Type, string(data), int64(ev.Position.Commit), int64(ev.Position.Prepare), at)
	return err
}

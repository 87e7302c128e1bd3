package projections

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/eventstore"
)

// Clients is the read model of registered partner clients.
type Clients struct{}

func (Clients) Name() string     { return "clients" }
func (Clients) Tables() []string { return []string{"clients"} }

func (Clients) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	if ev.Type != consent.TypeClientRegistered && ev.Type != consent.TypeClientSecretRotated {
		return nil
	}
	payload, err := consent.Decode(ev.Type, ev.Data)
	if err != nil {
		return err
	}
	at := ev.Metadata.OccurredAt
	switch e := payload.(type) {
	case *consent.ClientRegistered:
		_, err = tx.Exec(ctx, `
			INSERT INTO clients (client_id, name, redirect_uris, scopes, grant_types, implicit_allowed, public, secret_hash, registered_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, NULLIF($8, ''), $9, $9)`,
			e.ClientID, e.Name, nonNil(e.RedirectURIs), nonNil(e.Scopes), nonNil(e.GrantTypes), e.ImplicitAllowed, e.Public, e.SecretHash, at)
	case *consent.ClientSecretRotated:
		_, err = tx.Exec(ctx, `UPDATE clients SET secret_hash = $2, updated_at = $3 WHERE client_id = $1`, e.ClientID, e.SecretHash, at)
	}
	return err
}

// Consents is the read model of grants: one row per account and client,
// with the latest answer.
type Consents struct{}

func (Consents) Name() string     { return "consents" }
func (Consents) Tables() []string { return []string{"consents"} }

func (Consents) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	switch ev.Type {
	case consent.TypeGranted, consent.TypeDenied, consent.TypeRevoked:
	default:
		return nil // clients and token facts: not decoded for nothing
	}
	payload, err := consent.Decode(ev.Type, ev.Data)
	if err != nil {
		return err
	}
	at := ev.Metadata.OccurredAt
	switch e := payload.(type) {
	case *consent.Granted:
		_, err = tx.Exec(ctx, `
			INSERT INTO consents (grant_id, account_id, client_id, status, scopes, vins, notice_version, collection_method, granted_at, updated_at)
			VALUES ($1, $2, $3, 'granted', $4, $5, $6, $7, $8, $8)
			ON CONFLICT (grant_id) DO UPDATE SET status = 'granted', scopes = $4, vins = $5, notice_version = $6,
				collection_method = $7, granted_at = $8, revoked_at = NULL, revoked_reason = NULL, updated_at = $8`,
			e.GrantID, e.AccountID, e.ClientID, e.Scopes, nonNil(e.VINs), e.NoticeVersion, e.CollectionMethod, at)
	case *consent.Denied:
		// A refusal leaves an existing grant as it was; it only shows where
		// nothing was granted before.
		_, err = tx.Exec(ctx, `
			INSERT INTO consents (grant_id, account_id, client_id, status, scopes, vins, notice_version, collection_method, updated_at)
			VALUES ($1, $2, $3, 'denied', $4, '{}', $5, $6, $7)
			ON CONFLICT (grant_id) DO UPDATE SET status = 'denied', scopes = $4, notice_version = $5,
				collection_method = $6, updated_at = $7 WHERE consents.status <> 'granted'`,
			e.GrantID, e.AccountID, e.ClientID, e.Scopes, e.NoticeVersion, e.CollectionMethod, at)
	case *consent.Revoked:
		_, err = tx.Exec(ctx, `UPDATE consents SET status = 'revoked', revoked_at = $2, revoked_reason = $3, updated_at = $2
			WHERE grant_id = $1`, e.GrantID, at, e.Reason)
	}
	return err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

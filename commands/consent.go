package commands

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/eventstore"
)

var consentArea = area{decode: consent.Decode, typeOf: consent.TypeOf}

// RegisterClient is an admin registering a partner client.
type RegisterClient struct {
	Name            string
	RedirectURIs    []string
	Scopes          []string
	GrantTypes      []string
	ImplicitAllowed bool
	Public          bool
	WebhookURL      string
}

// RegisterClient records a client; a confidential client's secret is
// returned here once and only its hash is kept.
func (h *Handler) RegisterClient(ctx context.Context, cmd RegisterClient) (id uuid.UUID, secret string, err error) {
	id = h.newID(ctx, "client")
	hash := ""
	if !cmd.Public {
		secret = account.NewSecret()
		hash = account.HashToken(secret)
	}
	reg, err := consent.NewClientRegistration(id, cmd.Name, cmd.RedirectURIs, cmd.Scopes, cmd.GrantTypes, cmd.ImplicitAllowed, cmd.Public, hash, cmd.WebhookURL)
	if err != nil {
		return uuid.Nil, "", err
	}
	res, err := h.appendEvents(ctx, consent.ClientStream(id), eventstore.NoStream, typed{consent.TypeClientRegistered, reg})
	if err != nil {
		return uuid.Nil, "", err
	}
	h.settle(ctx, res.Position)
	return id, secret, nil
}

// RotateClientSecret gives a confidential client a new secret; the old one
// stops working.
func (h *Handler) RotateClientSecret(ctx context.Context, id uuid.UUID) (string, error) {
	secret := account.NewSecret()
	err := decide(ctx, h, consent.ClientStream(id), consentArea, func() *consent.Client { return &consent.Client{} },
		func(c *consent.Client, _ time.Time) ([]any, error) { return c.RotateSecret(account.HashToken(secret)) })
	if err != nil {
		return "", err
	}
	return secret, nil
}

// RevokeAccess ends an account's grant to a client (the user's revocation,
// or the end of what the grant covered).
func (h *Handler) RevokeAccess(ctx context.Context, accountID, clientID uuid.UUID, reason string) error {
	grantID := consent.GrantID(accountID, clientID)
	found := false
	err := decide(ctx, h, consent.GrantStream(accountID, clientID), consentArea, func() *consent.Grant { return &consent.Grant{} },
		func(g *consent.Grant, _ time.Time) ([]any, error) {
			found = g.Active()
			return g.Revoke(grantID, accountID, clientID, reason), nil
		})
	if err == nil && !found {
		return consent.ErrNoGrant
	}
	return err
}

// ConsentDecision is a user's answer in the consent prompt.
type ConsentDecision struct {
	AccountID        uuid.UUID
	ClientID         uuid.UUID
	Accept           bool
	Scopes           []string
	VINs             []string
	NoticeVersion    string
	CollectionMethod string // e.g. "hosted-consent-prompt"
}

// DecideConsent records GrantConsent or DenyConsent for the whole list of
// scopes the client asked for.
func (h *Handler) DecideConsent(ctx context.Context, cmd ConsentDecision) (uuid.UUID, error) {
	client := &consent.Client{}
	if _, err := h.fold(ctx, consent.ClientStream(cmd.ClientID), consent.Decode, client.Apply); err != nil {
		return uuid.Nil, err
	}
	if !client.Exists() {
		return uuid.Nil, consent.ErrUnknownClient
	}
	if err := consent.CheckRequestedScopes(cmd.Scopes, client.Registration().Scopes); err != nil {
		return uuid.Nil, err
	}
	grantID := consent.GrantID(cmd.AccountID, cmd.ClientID)
	rec := consent.Granted{GrantID: grantID, AccountID: cmd.AccountID, ClientID: cmd.ClientID,
		Controller: client.Registration().Name, Scopes: cmd.Scopes, VINs: cmd.VINs,
		NoticeVersion: cmd.NoticeVersion, CollectionMethod: cmd.CollectionMethod}
	err := decide(ctx, h, consent.GrantStream(cmd.AccountID, cmd.ClientID), consentArea, func() *consent.Grant { return &consent.Grant{} },
		func(g *consent.Grant, _ time.Time) ([]any, error) { return g.Decide(cmd.Accept, rec), nil })
	return grantID, err
}

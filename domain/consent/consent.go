// Package consent is partner access: the partner clients (Accessing
// Parties) admins register, and the grants end users give them — what they
// consented to, which partner, when, under which notice, and when it ended.
//
// Streams: "client-<clientId>" holds a client's registration and secret
// rotations; "grant-<id>" holds the grants of one account to one client
// (the id derives from both), so granting, denying and revoking are decided
// on the whole history of that pair.
package consent

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain"
)

const (
	TypeClientRegistered    = "consent.client-registered.v1"
	TypeClientSecretRotated = "consent.client-secret-rotated.v1"
	TypeGranted             = "consent.granted.v1"
	TypeDenied              = "consent.denied.v1"
	TypeRevoked             = "consent.revoked.v1"
)

func ClientStream(id uuid.UUID) string { return "client-" + id.String() }

var grants = uuid.MustParse("2f6c0d1e-8b3a-4a47-9d6e-5c1b7a9e3f20")

// GrantID names the grants of one account to one client.
func GrantID(account, client uuid.UUID) uuid.UUID {
	return uuid.NewSHA1(grants, []byte(account.String()+"/"+client.String()))
}

func GrantStream(account, client uuid.UUID) string {
	return "grant-" + GrantID(account, client).String()
}

// ClientRegistered: an admin registered a partner client. A confidential
// client's secret is 256 random bits, so its SHA-256 is all that is kept.
type ClientRegistered struct {
	ClientID        uuid.UUID `json:"clientId"`
	Name            string    `json:"name"`
	RedirectURIs    []string  `json:"redirectUris"`
	Scopes          []string  `json:"scopes"`
	GrantTypes      []string  `json:"grantTypes"`
	ImplicitAllowed bool      `json:"implicitAllowed"`
	Public          bool      `json:"public"`
	SecretHash      string    `json:"secretHash,omitempty"`
	// WebhookURL receives the client's signed notifications
	// (consent.granted, consent.revoked, token.revoked); empty: none.
	WebhookURL string `json:"webhookUrl,omitempty"`
}

// ClientSecretRotated replaces the secret; the old one stops working.
type ClientSecretRotated struct {
	ClientID   uuid.UUID `json:"clientId"`
	SecretHash string    `json:"secretHash"`
}

// Granted is a consent record: what ISO/IEC TS 27560 and the Kantara
// Consent Receipt require (subject, controller, purposes, data, notice,
// collection method, time — the time is the event's).
type Granted struct {
	GrantID          uuid.UUID `json:"grantId"`
	AccountID        uuid.UUID `json:"accountId"`
	ClientID         uuid.UUID `json:"clientId"`
	Controller       string    `json:"controller"`
	Scopes           []string  `json:"scopes"`
	VINs             []string  `json:"vins,omitempty"`
	NoticeVersion    string    `json:"noticeVersion"`
	CollectionMethod string    `json:"collectionMethod"`
}

// Denied: the user declined the whole list of scopes.
type Denied struct {
	GrantID          uuid.UUID `json:"grantId"`
	AccountID        uuid.UUID `json:"accountId"`
	ClientID         uuid.UUID `json:"clientId"`
	Scopes           []string  `json:"scopes"`
	NoticeVersion    string    `json:"noticeVersion"`
	CollectionMethod string    `json:"collectionMethod"`
}

// Revoked ends a grant: by the user, or because what it covered ended.
type Revoked struct {
	GrantID   uuid.UUID `json:"grantId"`
	AccountID uuid.UUID `json:"accountId"`
	ClientID  uuid.UUID `json:"clientId"`
	Reason    string    `json:"reason"` // user, property-removed
}

func Decode(eventType string, data []byte) (any, error) {
	var v any
	switch eventType {
	case TypeClientRegistered:
		v = &ClientRegistered{}
	case TypeClientSecretRotated:
		v = &ClientSecretRotated{}
	case TypeGranted:
		v = &Granted{}
	case TypeDenied:
		v = &Denied{}
	case TypeRevoked:
		v = &Revoked{}
	default:
		if v = oauthPayload(eventType); v == nil {
			return nil, fmt.Errorf("consent: unknown event type %q", eventType)
		}
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("consent: decode %s: %w", eventType, err)
	}
	return v, nil
}

func TypeOf(payload any) string {
	switch payload.(type) {
	case *ClientRegistered:
		return TypeClientRegistered
	case *ClientSecretRotated:
		return TypeClientSecretRotated
	case *Granted:
		return TypeGranted
	case *Denied:
		return TypeDenied
	case *Revoked:
		return TypeRevoked
	}
	if t := oauthTypeOf(payload); t != "" {
		return t
	}
	panic(fmt.Sprintf("consent: no type name for %T", payload))
}

// Scopes partners may ask for.
const (
	ScopeProfile        = "account:profile"
	ScopeVehicleStatus  = "vehicle:status"  // needs the vehicleStatus service
	ScopeVehicleRemote  = "vehicle:remote"  // needs the remoteCommands service
	ScopeAccountsCreate = "accounts:create" // client credentials only
)

var knownScopes = []string{ScopeProfile, ScopeVehicleStatus, ScopeVehicleRemote, ScopeAccountsCreate}

// Grant types a client may be registered with.
var knownGrantTypes = []string{"authorization_code", "refresh_token", "client_credentials", "implicit"}

var (
	ErrInvalidClient    = domain.Invalidf("invalid_client_metadata", "invalid client registration")
	ErrUnknownClient    = domain.New(domain.KindNotFound, "unknown_client", "no such client")
	ErrNoGrant          = domain.New(domain.KindNotFound, "no_grant", "this account has not granted this client access")
	ErrInvalidScope     = domain.Invalidf("invalid_scope", "scopes must be known and allowed for the client")
	ErrAccountsCreateCC = domain.Invalidf("invalid_scope", "accounts:create is for client credentials only, never granted by a user")
)

// NewClientRegistration validates what an admin registers. Redirect URIs
// are matched exactly later, so they must be absolute, without fragment,
// and https except for loopback development hosts.
func NewClientRegistration(id uuid.UUID, name string, redirectURIs, scopes, grantTypes []string, implicit, public bool, secretHash, webhookURL string) (*ClientRegistered, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 200 {
		return nil, domain.Invalidf("invalid_client_metadata", "name must be 1 to 200 characters")
	}
	for _, s := range scopes {
		if !slices.Contains(knownScopes, s) {
			return nil, domain.Invalidf("invalid_client_metadata", "unknown scope %q", s)
		}
	}
	if len(grantTypes) == 0 {
		grantTypes = []string{"authorization_code", "refresh_token"}
	}
	for _, g := range grantTypes {
		if !slices.Contains(knownGrantTypes, g) {
			return nil, domain.Invalidf("invalid_client_metadata", "unknown grant type %q", g)
		}
	}
	if implicit && !slices.Contains(grantTypes, "implicit") {
		grantTypes = append(grantTypes, "implicit")
	}
	needsRedirect := slices.Contains(grantTypes, "authorization_code") || slices.Contains(grantTypes, "implicit")
	if needsRedirect && len(redirectURIs) == 0 {
		return nil, domain.Invalidf("invalid_redirect_uri", "redirectUris are required for the authorization code and implicit grants")
	}
	for _, r := range redirectURIs {
		if err := checkRedirectURI(r); err != nil {
			return nil, err
		}
	}
	if public && slices.Contains(grantTypes, "client_credentials") {
		return nil, domain.Invalidf("invalid_client_metadata", "a public client cannot use client credentials")
	}
	if slices.Contains(scopes, ScopeAccountsCreate) && !slices.Contains(grantTypes, "client_credentials") {
		return nil, domain.Invalidf("invalid_client_metadata", "accounts:create needs the client_credentials grant")
	}
	if webhookURL != "" {
		if err := checkRedirectURI(webhookURL); err != nil {
			return nil, domain.Invalidf("invalid_client_metadata", "webhookUrl must be an absolute https URL (http only on loopback)")
		}
	}
	return &ClientRegistered{ClientID: id, Name: name, RedirectURIs: redirectURIs, Scopes: scopes,
		GrantTypes: grantTypes, ImplicitAllowed: implicit, Public: public, SecretHash: secretHash, WebhookURL: webhookURL}, nil
}

func checkRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	bad := err != nil || !u.IsAbs() || u.Fragment != "" || u.Host == ""
	loopback := err == nil && (u.Hostname() == "localhost" || u.Hostname() == "127.0.0.1" || u.Hostname() == "::1")
	if bad || (u.Scheme != "https" && !(u.Scheme == "http" && loopback)) {
		return domain.Invalidf("invalid_redirect_uri", "redirect URI %q must be an absolute https URL without fragment (http only on loopback)", raw)
	}
	return nil
}

// Client is the state folded from a client stream.
type Client struct {
	reg        *ClientRegistered
	secretHash string
}

func (c *Client) Apply(event any, _ time.Time) {
	switch e := event.(type) {
	case *ClientRegistered:
		c.reg, c.secretHash = e, e.SecretHash
	case *ClientSecretRotated:
		c.secretHash = e.SecretHash
	}
}

func (c *Client) Exists() bool { return c.reg != nil }

// Registration is what the client was registered with (nil when unknown).
func (c *Client) Registration() *ClientRegistered { return c.reg }

// RotateSecret decides a new secret for a confidential client.
func (c *Client) RotateSecret(secretHash string) ([]any, error) {
	if !c.Exists() {
		return nil, ErrUnknownClient
	}
	if c.reg.Public {
		return nil, domain.Invalidf("invalid_client_metadata", "a public client has no secret")
	}
	return []any{&ClientSecretRotated{ClientID: c.reg.ClientID, SecretHash: secretHash}}, nil
}

// Grant is the state folded from the grant stream of one account and one
// client.
type Grant struct {
	active bool
	scopes []string
}

func (g *Grant) Apply(event any, _ time.Time) {
	switch e := event.(type) {
	case *Granted:
		g.active, g.scopes = true, e.Scopes
	case *Revoked:
		g.active = false
	}
}

func (g *Grant) Active() bool { return g.active }

// Revoke decides ending the grant; an inactive grant changes nothing.
func (g *Grant) Revoke(grantID, account, client uuid.UUID, reason string) []any {
	if !g.active {
		return nil
	}
	return []any{&Revoked{GrantID: grantID, AccountID: account, ClientID: client, Reason: reason}}
}

// Decide records a user's answer to a consent request: the whole list of
// scopes accepted, or declined. Accepting what is already granted, scope for
// scope, changes nothing.
func (g *Grant) Decide(accept bool, rec Granted) []any {
	if !accept {
		return []any{&Denied{GrantID: rec.GrantID, AccountID: rec.AccountID, ClientID: rec.ClientID, Scopes: rec.Scopes,
			NoticeVersion: rec.NoticeVersion, CollectionMethod: rec.CollectionMethod}}
	}
	if g.active && slices.Equal(g.scopes, rec.Scopes) {
		return nil
	}
	return []any{&rec}
}

// CheckRequestedScopes checks what a client asks a user for: known, allowed
// for the client, and never accounts:create.
func CheckRequestedScopes(requested, allowed []string) error {
	if len(requested) == 0 {
		return ErrInvalidScope
	}
	for _, s := range requested {
		if s == ScopeAccountsCreate {
			return ErrAccountsCreateCC
		}
		if !slices.Contains(allowed, s) {
			return ErrInvalidScope
		}
	}
	return nil
}

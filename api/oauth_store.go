package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/pkce"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/projections"
)

// oauthStore is fosite's storage, kept by the ledger: clients, codes and
// tokens come from the in-memory token-validity model when it can answer
// (projections.TokenValidity), else from the clients and oauth_tokens read
// models, and every change is a fact appended through commands.RecordOAuth.
//
// Writes are collected in the request's oauthExchange and appended together
// when the endpoint has its answer (see oauthExchange); a write outside an
// exchange is refused, so no protocol path can record half an exchange.
type oauthStore struct {
	cmds   *commands.Handler
	pool   *pgxpool.Pool
	config *fosite.Config
	// tokens answers reads from memory when it can (nil: never); what it
	// cannot answer is read from the database.
	tokens *projections.TokenValidity
}

var (
	_ fosite.ClientManager          = (*oauthStore)(nil)
	_ oauth2.CoreStorage            = (*oauthStore)(nil)
	_ oauth2.TokenRevocationStorage = (*oauthStore)(nil)
	_ pkce.PKCERequestStorage       = (*oauthStore)(nil)
)

var errNoExchange = errors.New("oauth: storage writes happen inside an exchange")

// oauthExchange collects the changes one OAuth2 request makes to token
// families, so that they are appended together once the protocol has its
// answer — a code or token is recorded only when it is handed out — and
// remembers what the protocol's reads found, which tells a replay from an
// ordinary revocation.
type oauthExchange struct {
	mu      sync.Mutex
	order   []string          // families, in first-touched order
	changes map[string][]any  // family → changes, in protocol order
	family  map[string]string // signature → family, of what was read or written
	reason  map[string]string // family → why its tokens are revoked here
	rotated map[string]bool   // rotated refresh tokens presented again
	// byClient marks the revocation endpoint's exchanges: revocations
	// without a detected replay are then the client's (RFC 7009).
	byClient bool
}

type exchangeKey struct{}

func withExchange(ctx context.Context) (context.Context, *oauthExchange) {
	x := &oauthExchange{changes: map[string][]any{}, family: map[string]string{}, reason: map[string]string{}, rotated: map[string]bool{}}
	return context.WithValue(ctx, exchangeKey{}, x), x
}

func exchangeOf(ctx context.Context) *oauthExchange {
	x, _ := ctx.Value(exchangeKey{}).(*oauthExchange)
	return x
}

// families lists the families the exchange changes.
func (x *oauthExchange) families() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.order)
}

func (x *oauthExchange) changesOf(family string) []any {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.changes[family])
}

func (x *oauthExchange) add(family string, change any) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, seen := x.changes[family]; !seen {
		x.order = append(x.order, family)
	}
	x.changes[family] = append(x.changes[family], change)
}

// saw notes the family of a signature the protocol read or wrote.
func (x *oauthExchange) saw(sig, family string) {
	if x == nil {
		return
	}
	x.mu.Lock()
	x.family[sig] = family
	x.mu.Unlock()
}

// detected records a replay in family once; the revocations the protocol
// asks for next in this exchange carry its reason.
func (x *oauthExchange) detected(family, reason string, change any) {
	x.mu.Lock()
	already := x.reason[family] == reason
	x.reason[family] = reason
	x.mu.Unlock()
	if !already {
		x.add(family, change)
	}
}

func (x *oauthExchange) revocationReason(family string) string {
	x.mu.Lock()
	defer x.mu.Unlock()
	if r := x.reason[family]; r != "" {
		return r
	}
	if x.byClient {
		return consent.RevokedByClient
	}
	return consent.RevokedDeleted
}

// commit appends the exchange's changes, one family at a time (an exchange
// touches one family in every flow fosite has); each family's changes are
// appended together or not at all, and are in the read models when it
// returns.
func (x *oauthExchange) commit(ctx context.Context, cmds *commands.Handler) error {
	x.mu.Lock()
	order, changes := slices.Clone(x.order), x.changes
	x.mu.Unlock()
	for _, family := range order {
		if err := cmds.RecordOAuth(ctx, family, changes[family]); err != nil {
			return err
		}
	}
	return nil
}

// sha256Hasher checks client secrets. A confidential client's secret is 256
// random bits, stored as its SHA-256 (hex): a slow password hash (fosite's
// bcrypt default) would add nothing against guessing but latency.
type sha256Hasher struct{}

func (sha256Hasher) Compare(_ context.Context, hash, data []byte) error {
	if !secretMatches(string(hash), string(data)) {
		return fosite.ErrInvalidClient
	}
	return nil
}

// secretMatches compares, in constant time, the SHA-256 (hex) of secret
// with hash, a client's stored one (account.HashToken); an empty hash (a
// public client) matches nothing. It allocates nothing: introspection calls
// it on every request.
func secretMatches(hash, secret string) bool {
	var want, got [2 * sha256.Size]byte
	if len(hash) != len(want) {
		return false // not a hash HashToken made: no secret matches it
	}
	copy(want[:], hash)
	var in [128]byte // a secret is 43 characters: hashed from the stack
	var sum [sha256.Size]byte
	if len(secret) <= len(in) {
		sum = sha256.Sum256(in[:copy(in[:], secret)])
	} else {
		sum = sha256.Sum256([]byte(secret))
	}
	hex.Encode(got[:], sum[:])
	return subtle.ConstantTimeCompare(want[:], got[:]) == 1
}

func (sha256Hasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	return []byte(account.HashToken(string(data))), nil
}

// oauthClient is a registered partner client as fosite sees it.
type oauthClient struct {
	id           uuid.UUID
	name         string
	redirectURIs []string
	scopes       []string
	grantTypes   []string
	implicit     bool
	public       bool
	secretHash   string
}

var _ fosite.ClientWithCustomTokenLifespans = (*oauthClient)(nil)

func (c *oauthClient) GetID() string             { return c.id.String() }
func (c *oauthClient) GetHashedSecret() []byte   { return []byte(c.secretHash) }
func (c *oauthClient) GetRedirectURIs() []string { return c.redirectURIs }
func (c *oauthClient) GetScopes() fosite.Arguments {
	return c.scopes
}
func (c *oauthClient) IsPublic() bool                { return c.public }
func (c *oauthClient) GetAudience() fosite.Arguments { return nil }

// GetGrantTypes lists what the client was registered with; the implicit
// grant only when it was explicitly allowed.
func (c *oauthClient) GetGrantTypes() fosite.Arguments {
	var out fosite.Arguments
	for _, g := range c.grantTypes {
		if g != "implicit" || c.implicit {
			out = append(out, g)
		}
	}
	return out
}

// GetResponseTypes: "code" for the authorization code grant, "token" only
// for clients registered with the implicit grant allowed.
func (c *oauthClient) GetResponseTypes() fosite.Arguments {
	var out fosite.Arguments
	if slices.Contains(c.grantTypes, "authorization_code") {
		out = append(out, "code")
	}
	if c.implicit {
		out = append(out, "token")
	}
	return out
}

// Access tokens that never pass a back channel — the implicit grant's, in a
// URL fragment — and client-credentials tokens, which stand for no user,
// live an hour; the others the provider's default (24 hours).
const shortAccessTokenLifespan = time.Hour

func (c *oauthClient) GetEffectiveLifespan(gt fosite.GrantType, tt fosite.TokenType, fallback time.Duration) time.Duration {
	if tt == fosite.AccessToken && (gt == fosite.GrantTypeImplicit || gt == fosite.GrantTypeClientCredentials) {
		return min(fallback, shortAccessTokenLifespan)
	}
	return fallback
}

// GetClient reads the clients read model; a secret rotation is in it when
// the rotation command returns, so the old secret fails at once.
func (s *oauthStore) GetClient(ctx context.Context, id string) (fosite.Client, error) {
	cid, err := uuid.Parse(id)
	if err != nil {
		return nil, fosite.ErrNotFound
	}
	if s.tokens != nil {
		if m, ok := s.tokens.Client(cid); ok {
			return clientFromMemory(m), nil
		}
	}
	c := &oauthClient{id: cid}
	err = s.pool.QueryRow(ctx, `
		SELECT name, redirect_uris, scopes, grant_types, implicit_allowed, public, coalesce(secret_hash, '')
		FROM clients WHERE client_id = $1`, cid).
		Scan(&c.name, &c.redirectURIs, &c.scopes, &c.grantTypes, &c.implicit, &c.public, &c.secretHash)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fosite.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("oauth: client %s: %w", cid, err)
	}
	return c, nil
}

var errNoClientAssertions = errors.New("oauth: client assertions (private_key_jwt) are not supported")

// ClientAssertionJWTValid and SetClientAssertionJWT serve private_key_jwt
// client authentication, which no client here is registered for.
func (s *oauthStore) ClientAssertionJWTValid(context.Context, string) error {
	return errNoClientAssertions
}

func (s *oauthStore) SetClientAssertionJWT(context.Context, string, time.Time) error {
	return errNoClientAssertions
}

// tokenRow is one row of oauth_tokens.
type tokenRow struct {
	kind, requestID, grantType, status string
	client                             uuid.UUID
	clientRow                          *oauthClient
	account                            *uuid.UUID
	requestedScopes, grantedScopes     []string
	requestedAudience, grantedAudience []string
	redirectURI, challenge, method     string
	requestedAt, expiresAt             time.Time
}

// load reads a code or token, from the in-memory token-validity model when
// it can answer, else from the database. One issued for an account works
// only while the account's grant to the client, as given before the token
// was issued, stands: the user's revocation (or the end of what the grant
// covered, such as RemoveProperty) ends the client's codes and tokens at
// once, and granting again does not revive them. A user's token counts only while the grant
// it was issued under stands and the account is not blocked (PINBlocked or
// AccountBlocked): revocation, RemoveProperty and blocking all take effect
// on the next read, because the commands behind them wait for the read
// models. Once "remove all enrollments" lifts a block, the account's tokens
// count again, as its grants still stand.
func (s *oauthStore) load(ctx context.Context, sig, kind string) (*tokenRow, error) {
	if sig == "" {
		return nil, fosite.ErrNotFound
	}
	if r, found, served := s.loadFromMemory(sig); served {
		if !found || r.kind != kind {
			return nil, fosite.ErrNotFound
		}
		return r, nil
	}
	r := &tokenRow{clientRow: &oauthClient{}}
	c := r.clientRow
	// The client comes with the token in the same query: every read of a
	// code or token needs it, and introspection is the hot path.
	err := s.pool.QueryRow(ctx, `
		SELECT t.kind, t.request_id, t.grant_type, t.status, t.client_id, t.account_id, t.requested_scopes, t.granted_scopes,
			t.requested_audience, t.granted_audience, t.redirect_uri, t.code_challenge, t.code_challenge_method, t.requested_at, t.expires_at,
			c.name, c.redirect_uris, c.scopes, c.grant_types, c.implicit_allowed, c.public, coalesce(c.secret_hash, '')
		FROM oauth_tokens t JOIN clients c ON c.client_id = t.client_id
		WHERE t.signature = $1 AND (account_id IS NULL OR (EXISTS (
			SELECT 1 FROM consents g WHERE g.account_id = t.account_id AND g.client_id = t.client_id
				AND g.status = 'granted' AND g.granted_at <= t.issued_at)
			AND NOT EXISTS (
			SELECT 1 FROM enrollment_accounts e WHERE e.account_id = t.account_id AND e.block_state <> 'NotBlocked')))`, sig).
		Scan(&r.kind, &r.requestID, &r.grantType, &r.status, &r.client, &r.account, &r.requestedScopes, &r.grantedScopes,
			&r.requestedAudience, &r.grantedAudience, &r.redirectURI, &r.challenge, &r.method, &r.requestedAt, &r.expiresAt,
			&c.name, &c.redirectURIs, &c.scopes, &c.grantTypes, &c.implicit, &c.public, &c.secretHash)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && r.kind != kind) {
		return nil, fosite.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("oauth: token: %w", err)
	}
	c.id = r.client
	return r, nil
}

// loadFromMemory is load's answer from the in-memory model; served is false
// when the model cannot answer for sig.
func (s *oauthStore) loadFromMemory(sig string) (r *tokenRow, found, served bool) {
	if s.tokens == nil {
		return nil, false, false
	}
	t, found, served := s.tokens.Token(sig)
	if !served || !found {
		return nil, false, served
	}
	c, ok := s.tokens.Client(t.ClientID)
	if !ok {
		return nil, false, false
	}
	return &tokenRow{
		kind: t.Kind, requestID: t.RequestID, grantType: t.GrantType, status: t.Status,
		client: t.ClientID, clientRow: clientFromMemory(c), account: t.AccountID,
		requestedScopes: t.RequestedScopes, grantedScopes: t.GrantedScopes,
		requestedAudience: t.RequestedAudience, grantedAudience: t.GrantedAudience,
		redirectURI: t.RedirectURI, challenge: t.CodeChallenge, method: t.CodeChallengeMethod,
		requestedAt: t.RequestedAt, expiresAt: t.ExpiresAt,
	}, true, true
}

func clientFromMemory(m projections.OAuthClient) *oauthClient {
	return &oauthClient{id: m.ID, name: m.Name, redirectURIs: m.RedirectURIs, scopes: m.Scopes, grantTypes: m.GrantTypes,
		implicit: m.Implicit, public: m.Public, secretHash: m.SecretHash}
}

// requester rebuilds what fosite stored with a code or token. It hydrates
// the session fosite passes in, as fosite expects of its storage: the token
// endpoint validates a code's expiry on that session.
func (s *oauthStore) requester(r *tokenRow, into fosite.Session) fosite.Requester {
	form := url.Values{"grant_type": {r.grantType}}
	if r.redirectURI != "" {
		form.Set("redirect_uri", r.redirectURI)
	}
	if r.challenge != "" {
		form.Set("code_challenge", r.challenge)
		form.Set("code_challenge_method", r.method)
	}
	subject := ""
	if r.account != nil {
		subject = r.account.String()
	}
	session, ok := into.(*fosite.DefaultSession)
	if !ok || session == nil {
		session = newSession("")
	}
	session.Subject = subject
	session.SetExpiresAt(fosite.TokenType(r.kind), r.expiresAt)
	return &fosite.Request{
		ID: r.requestID, RequestedAt: r.requestedAt, Client: r.clientRow, Form: form, Session: session,
		RequestedScope: r.requestedScopes, GrantedScope: r.grantedScopes,
		RequestedAudience: r.requestedAudience, GrantedAudience: r.grantedAudience,
	}
}

// newSession is the session of every code and token: the subject is the
// account id, empty for client credentials. Nothing else about the person
// travels with a token.
func newSession(subject string) *fosite.DefaultSession {
	return &fosite.DefaultSession{Subject: subject, ExpiresAt: map[fosite.TokenType]time.Time{}}
}

// grantOf is what a requester was granted, for an issue event.
func (s *oauthStore) grantOf(ctx context.Context, req fosite.Requester, kind fosite.TokenType, grantType string) (consent.TokenGrant, error) {
	client, err := uuid.Parse(req.GetClient().GetID())
	if err != nil {
		return consent.TokenGrant{}, fmt.Errorf("oauth: client id %q", req.GetClient().GetID())
	}
	g := consent.TokenGrant{
		RequestID: req.GetID(), ClientID: client, GrantType: grantType,
		RequestedScopes: req.GetRequestedScopes(), GrantedScopes: req.GetGrantedScopes(),
		RequestedAudience: req.GetRequestedAudience(), GrantedAudience: req.GetGrantedAudience(),
		RequestedAt: req.GetRequestedAt().UTC(), ExpiresAt: req.GetSession().GetExpiresAt(kind).UTC(),
	}
	if sub := req.GetSession().GetSubject(); sub != "" {
		id, err := uuid.Parse(sub)
		if err != nil {
			return consent.TokenGrant{}, fmt.Errorf("oauth: subject %q is not an account id", sub)
		}
		g.AccountID = &id
	}
	if g.ExpiresAt.IsZero() {
		lifespan := s.config.GetAccessTokenLifespan(ctx)
		switch kind {
		case fosite.RefreshToken:
			lifespan = s.config.GetRefreshTokenLifespan(ctx)
		case fosite.AuthorizeCode:
			lifespan = s.config.GetAuthorizeCodeLifespan(ctx)
		}
		g.ExpiresAt = g.RequestedAt.Add(lifespan)
	}
	return g, nil
}

// grantTypeOf names the grant a token is issued under: the token request's
// grant_type, or the implicit grant at the authorization endpoint.
func grantTypeOf(req fosite.Requester) string {
	if gt := req.GetRequestForm().Get("grant_type"); gt != "" {
		return gt
	}
	return "implicit"
}

// familyOf finds the family of a signature: from the exchange's reads, else
// from the read model.
func (s *oauthStore) familyOf(ctx context.Context, x *oauthExchange, sig string) (string, error) {
	x.mu.Lock()
	family, ok := x.family[sig]
	x.mu.Unlock()
	if ok {
		return family, nil
	}
	err := s.pool.QueryRow(ctx, `SELECT request_id FROM oauth_tokens WHERE signature = $1`, sig).Scan(&family)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fosite.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("oauth: token: %w", err)
	}
	return family, nil
}

func writing(ctx context.Context) (*oauthExchange, error) {
	x := exchangeOf(ctx)
	if x == nil {
		return nil, errNoExchange
	}
	return x, nil
}

// Authorization codes.

func (s *oauthStore) CreateAuthorizeCodeSession(ctx context.Context, sig string, req fosite.Requester) error {
	x, err := writing(ctx)
	if err != nil {
		return err
	}
	g, err := s.grantOf(ctx, req, fosite.AuthorizeCode, "authorization_code")
	if err != nil {
		return err
	}
	x.saw(sig, g.RequestID)
	x.add(g.RequestID, &consent.CodeIssued{Signature: sig, TokenGrant: g, RedirectURI: req.GetRequestForm().Get("redirect_uri")})
	return nil
}

// GetAuthorizeCodeSession answers ErrInvalidatedAuthorizeCode, with the
// requester, for a code used before: fosite then revokes what the code
// issued, and the exchange records the replay.
func (s *oauthStore) GetAuthorizeCodeSession(ctx context.Context, sig string, session fosite.Session) (fosite.Requester, error) {
	r, err := s.load(ctx, sig, consent.KindAuthorizeCode)
	if err != nil {
		return nil, err
	}
	req := s.requester(r, session)
	x := exchangeOf(ctx)
	x.saw(sig, r.requestID)
	switch r.status {
	case "active":
		return req, nil
	case "used":
		if x != nil {
			x.detected(r.requestID, consent.RevokedCodeReplay, &consent.CodeReplayDetected{RequestID: r.requestID, Signature: sig})
		}
		return req, fosite.ErrInvalidatedAuthorizeCode
	}
	return nil, fosite.ErrNotFound
}

func (s *oauthStore) InvalidateAuthorizeCodeSession(ctx context.Context, sig string) error {
	x, err := writing(ctx)
	if err != nil {
		return err
	}
	family, err := s.familyOf(ctx, x, sig)
	if err != nil {
		return err
	}
	x.add(family, &consent.CodeUsed{RequestID: family, Signature: sig})
	return nil
}

// PKCE. The challenge is part of the code's issue fact: fosite hands it
// over right after the code, within the same exchange.

func (s *oauthStore) CreatePKCERequestSession(ctx context.Context, sig string, req fosite.Requester) error {
	x, err := writing(ctx)
	if err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, c := range x.changes[req.GetID()] {
		if code, ok := c.(*consent.CodeIssued); ok && code.Signature == sig {
			code.CodeChallenge = req.GetRequestForm().Get("code_challenge")
			code.CodeChallengeMethod = req.GetRequestForm().Get("code_challenge_method")
			return nil
		}
	}
	return fmt.Errorf("oauth: a PKCE challenge for a code not issued in this exchange")
}

// GetPKCERequestSession answers ErrNotFound for a code issued without a
// challenge (which only a confidential client may do).
func (s *oauthStore) GetPKCERequestSession(ctx context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	r, err := s.load(ctx, sig, consent.KindAuthorizeCode)
	if err != nil {
		return nil, err
	}
	if r.challenge == "" {
		return nil, fosite.ErrNotFound
	}
	return s.requester(r, nil), nil
}

// DeletePKCERequestSession records nothing: the challenge ends with its
// code, which the exchange marks used. A wrong verifier leaves the code
// unused: guessing a 256-bit verifier within the code's ten minutes is no
// threat, and the right client can still finish.
func (s *oauthStore) DeletePKCERequestSession(context.Context, string) error { return nil }

// Access tokens.

func (s *oauthStore) CreateAccessTokenSession(ctx context.Context, sig string, req fosite.Requester) error {
	x, err := writing(ctx)
	if err != nil {
		return err
	}
	g, err := s.grantOf(ctx, req, fosite.AccessToken, grantTypeOf(req))
	if err != nil {
		return err
	}
	x.saw(sig, g.RequestID)
	x.add(g.RequestID, &consent.TokenIssued{Signature: sig, Kind: consent.KindAccessToken, TokenGrant: g})
	return nil
}

// GetAccessTokenSession answers ErrNotFound for a revoked token: it no
// longer exists as far as the protocol is concerned.
func (s *oauthStore) GetAccessTokenSession(ctx context.Context, sig string, session fosite.Session) (fosite.Requester, error) {
	r, err := s.load(ctx, sig, consent.KindAccessToken)
	if err != nil {
		return nil, err
	}
	if r.status != "active" {
		return nil, fosite.ErrNotFound
	}
	exchangeOf(ctx).saw(sig, r.requestID)
	return s.requester(r, session), nil
}

func (s *oauthStore) DeleteAccessTokenSession(ctx context.Context, sig string) error {
	x, err := writing(ctx)
	if err != nil {
		return err
	}
	family, err := s.familyOf(ctx, x, sig)
	if err != nil {
		return err
	}
	x.add(family, &consent.TokenRevoked{Kind: consent.KindAccessToken, Signatures: []string{sig}, Reason: x.revocationReason(family)})
	return nil
}

// Refresh tokens.

func (s *oauthStore) CreateRefreshTokenSession(ctx context.Context, sig, accessSig string, req fosite.Requester) error {
	x, err := writing(ctx)
	if err != nil {
		return err
	}
	g, err := s.grantOf(ctx, req, fosite.RefreshToken, grantTypeOf(req))
	if err != nil {
		return err
	}
	x.saw(sig, g.RequestID)
	x.add(g.RequestID, &consent.TokenIssued{Signature: sig, Kind: consent.KindRefreshToken, AccessSignature: accessSig, TokenGrant: g})
	return nil
}

// GetRefreshTokenSession answers ErrInactiveToken, with the requester, for
// a refresh token rotated before — fosite's signal of reuse — and
// ErrNotFound for a revoked one.
func (s *oauthStore) GetRefreshTokenSession(ctx context.Context, sig string, session fosite.Session) (fosite.Requester, error) {
	r, err := s.load(ctx, sig, consent.KindRefreshToken)
	if err != nil {
		return nil, err
	}
	req := s.requester(r, session)
	x := exchangeOf(ctx)
	x.saw(sig, r.requestID)
	switch r.status {
	case "active":
		return req, nil
	case "rotated":
		if x != nil {
			x.mu.Lock()
			x.rotated[sig] = true
			x.mu.Unlock()
		}
		return req, fosite.ErrInactiveToken
	}
	return nil, fosite.ErrNotFound
}

// DeleteRefreshTokenSession of a rotated token is how fosite acts on reuse
// (it revokes the family next): the exchange records the reuse.
func (s *oauthStore) DeleteRefreshTokenSession(ctx context.Context, sig string) error {
	x, err := writing(ctx)
	if err != nil {
		return err
	}
	family, err := s.familyOf(ctx, x, sig)
	if err != nil {
		return err
	}
	x.mu.Lock()
	reused := x.rotated[sig]
	x.mu.Unlock()
	if reused {
		x.detected(family, consent.RevokedRefreshReuse, &consent.RefreshReuseDetected{RequestID: family, Signature: sig})
		return nil
	}
	x.add(family, &consent.TokenRevoked{Kind: consent.KindRefreshToken, Signatures: []string{sig}, Reason: x.revocationReason(family)})
	return nil
}

// RotateRefreshToken ends the presented refresh token and supersedes the
// family's access tokens; fosite issues the new pair next, in the same
// exchange.
func (s *oauthStore) RotateRefreshToken(ctx context.Context, requestID, sig string) error {
	x, err := writing(ctx)
	if err != nil {
		return err
	}
	x.add(requestID, &consent.RefreshTokenRotated{RequestID: requestID, Signature: sig})
	return nil
}

// RevokeRefreshToken and RevokeAccessToken end every active token of the
// kind in the family (RFC 7009 §2.1: revoking one token of a grant may end
// the others; fosite asks for both).

func (s *oauthStore) RevokeRefreshToken(ctx context.Context, requestID string) error {
	return s.revokeKind(ctx, requestID, consent.KindRefreshToken)
}

func (s *oauthStore) RevokeAccessToken(ctx context.Context, requestID string) error {
	return s.revokeKind(ctx, requestID, consent.KindAccessToken)
}

func (s *oauthStore) revokeKind(ctx context.Context, requestID, kind string) error {
	x, err := writing(ctx)
	if err != nil {
		return err
	}
	x.add(requestID, &consent.TokenRevoked{Kind: kind, Reason: x.revocationReason(requestID)})
	return nil
}

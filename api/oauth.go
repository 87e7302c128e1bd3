package api

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/token/hmac"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain/consent"
)

// The OAuth2 authorization server (RFC 6749) on github.com/ory/fosite, kept
// by the ledger (oauth_store.go):
//
//	GET  /oauth2/authorize      the hosted consent prompt (prompt.go), answered through oauthProvider
//	POST /oauth2/token          authorization_code (+PKCE), refresh_token (rotation, reuse detection), client_credentials
//	POST /oauth2/introspect     RFC 7662, clients authenticate with HTTP Basic
//	POST /oauth2/revoke         RFC 7009
//	GET  /.well-known/oauth-authorization-server   RFC 8414 metadata
//
// These endpoints answer errors as RFC 6749 §5.2 JSON, {error,
// error_description}, not problem+json: OAuth2 client libraries parse that
// shape and no other.

const (
	// codeGrantAccessTokenLifespan is the lifetime of access tokens from the
	// authorization code and refresh grants (expires_in 86400, as partners
	// of the previous platform expect). Implicit and client-credentials
	// tokens live an hour (oauthClient.GetEffectiveLifespan).
	codeGrantAccessTokenLifespan = 24 * time.Hour
	// authorizeCodeLifespan: RFC 6749 §4.1.2 recommends at most 10 minutes.
	authorizeCodeLifespan = 10 * time.Minute
	refreshTokenLifespan  = 30 * 24 * time.Hour
)

// oauthProvider is the OAuth2 protocol. It keeps no state of its own: every
// code and token is a fact in the ledger, and the HMAC key comes from the
// configuration, so any instance with the same configuration answers for
// the tokens of another.
type oauthProvider struct {
	fosite    fosite.OAuth2Provider
	config    *fosite.Config
	store     *oauthStore
	verifier  *tokenVerifier // nil: introspection always asks fosite
	publicURL string
	log       *slog.Logger
}

var _ AuthorizeProtocol = (*oauthProvider)(nil)

func newOAuthProvider(cfg Config, app App, log *slog.Logger) *oauthProvider {
	// fosite keys HMAC-SHA512/256 with the first 32 bytes of the secret;
	// hashing lets an operator's secret be any length without truncation.
	key := sha256.Sum256(cfg.OAuthSecret)
	fc := &fosite.Config{
		AccessTokenLifespan:            codeGrantAccessTokenLifespan,
		AuthorizeCodeLifespan:          authorizeCodeLifespan,
		RefreshTokenLifespan:           refreshTokenLifespan,
		GlobalSecret:                   key[:],
		HMACHasher:                     sha512.New512_256,
		ScopeStrategy:                  fosite.ExactScopeStrategy,
		AudienceMatchingStrategy:       fosite.DefaultAudienceMatchingStrategy,
		EnforcePKCEForPublicClients:    true,
		EnablePKCEPlainChallengeMethod: false,
		// Every code exchange gets a refresh token (when the client may
		// use the grant), not only those asking for offline_access.
		RefreshTokenScopes:    []string{},
		ClientSecretsHasher:   sha256Hasher{},
		RedirectSecureChecker: fosite.IsRedirectURISecureStrict,
	}
	publicURL := strings.TrimRight(cfg.PublicURL, "/")
	if publicURL != "" {
		fc.TokenURL = publicURL + "/oauth2/token"
	}
	store := &oauthStore{cmds: app.Commands, pool: app.Pool, config: fc, tokens: app.Tokens}
	// Unprefixed tokens: fosite's prefixes name its vendor, not this service.
	strategy := oauth2.NewHMACSHAStrategyUnPrefixed(&hmac.HMACStrategy{Config: fc}, fc)
	provider := compose.Compose(fc, store, strategy,
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2AuthorizeImplicitFactory,
		compose.OAuth2ClientCredentialsGrantFactory,
		compose.OAuth2RefreshTokenGrantFactory,
		compose.OAuth2TokenIntrospectionFactory,
		compose.OAuth2TokenRevocationFactory,
		// PKCE after the code handler: it binds the challenge to the code.
		compose.OAuth2PKCEFactory,
	)
	return &oauthProvider{fosite: provider, config: fc, store: store, verifier: newTokenVerifier(fc.GlobalSecret), publicURL: publicURL, log: log}
}

// mountOAuth registers the OAuth2 endpoints. The hosted consent prompt
// answers through this provider unless App.Authorize names another protocol.
// It returns the provider so that the partner API checks bearer tokens
// against the very storage that issues and revokes them.
func (h *handlers) mountOAuth() *oauthProvider {
	o := newOAuthProvider(h.server.Config(), h.App, h.server.log)
	e := h.server.Echo()
	e.POST("/oauth2/token", o.token)
	e.POST("/oauth2/introspect", o.introspect)
	e.POST("/oauth2/revoke", o.revoke)
	e.GET("/.well-known/oauth-authorization-server", o.metadata)
	if h.authorize == nil {
		h.authorize = o
		h.mountPrompt()
	}
	return o
}

// issuer is the public URL, or the request's own when none is configured.
func (o *oauthProvider) issuer(c echo.Context) string {
	if o.publicURL != "" {
		return o.publicURL
	}
	return c.Scheme() + "://" + c.Request().Host
}

// authorizeRequest validates an authorization request given as its query:
// the prompt keeps the query of the request it was opened with and answers
// it from later pages.
func (o *oauthProvider) authorizeRequest(c echo.Context, query url.Values) (fosite.AuthorizeRequester, error) {
	r, err := http.NewRequestWithContext(c.Request().Context(), http.MethodGet, "/oauth2/authorize?"+query.Encode(), nil)
	if err != nil {
		return fosite.NewAuthorizeRequest(), fosite.ErrInvalidRequest.WithWrap(err)
	}
	r.Header.Set("Accept-Language", c.Request().Header.Get("Accept-Language"))
	ar, err := o.fosite.NewAuthorizeRequest(r.Context(), r)
	if errors.Is(err, fosite.ErrInvalidState) && ar.GetState() == "" {
		// fosite checks state last, once the request is otherwise valid,
		// and always requires one: whether it may be left out is
		// checkAuthorizeRequest's to judge.
		err = nil
	}
	if err != nil {
		return ar, err
	}
	return ar, checkAuthorizeRequest(ar)
}

// minStateLength is what makes a state value unguessable enough to bind
// an answer to the browser that asked (fosite's default).
const minStateLength = fosite.MinParameterEntropy

// checkAuthorizeRequest refuses, before a user spends time in the prompt,
// what the protocol would refuse at the end or must never grant: no scope
// (consent is to a list of scopes), accounts:create (a client-credentials
// scope, never a user's to give), and a code request without an S256 PKCE
// challenge from a public client, or with another method from anyone.
//
// state may be left out of a code request with a PKCE challenge, which
// protects the client against forged answers as well (RFC 9700 §2.1), as
// partners' existing integrations do; every other request needs a state of
// at least 8 characters.
func checkAuthorizeRequest(ar fosite.AuthorizeRequester) error {
	challenge, method := ar.GetRequestForm().Get("code_challenge"), ar.GetRequestForm().Get("code_challenge_method")
	withPKCE := ar.GetResponseTypes().ExactOne("code") && challenge != ""
	if state := ar.GetState(); (state != "" || !withPKCE) && len(state) < minStateLength {
		return fosite.ErrInvalidState.WithHintf("Send a state of at least %d characters (or, for a code, a PKCE challenge).", minStateLength)
	}
	scopes := ar.GetRequestedScopes()
	if len(scopes) == 0 {
		return fosite.ErrInvalidScope.WithHint("Ask for at least one scope.")
	}
	if slices.Contains(scopes, consent.ScopeAccountsCreate) {
		return fosite.ErrInvalidScope.WithHint("The scope 'accounts:create' is granted through client credentials only.")
	}
	if !ar.GetResponseTypes().Has("code") {
		return nil
	}
	switch {
	case challenge == "" && method != "":
		return fosite.ErrInvalidRequest.WithHint("code_challenge_method was given without a code_challenge.")
	case challenge == "" && ar.GetClient().IsPublic():
		return fosite.ErrInvalidRequest.WithHint("This client must send a PKCE code_challenge (S256).")
	case challenge != "" && method != "S256":
		return fosite.ErrInvalidRequest.WithHint("Clients must use code_challenge_method=S256.")
	}
	return nil
}

// Parse validates the authorization request the prompt was opened with.
func (o *oauthProvider) Parse(c echo.Context, query url.Values) (PromptRequest, error) {
	ar, err := o.authorizeRequest(c, query)
	if err != nil {
		return PromptRequest{}, err
	}
	client := ar.GetClient().(*oauthClient)
	return PromptRequest{ClientID: client.id, ClientName: client.name, Scopes: ar.GetRequestedScopes()}, nil
}

// Fail answers a request that cannot go on: with a redirect carrying the
// error and state when the redirect URI is the client's, else with a page —
// an unknown client or redirect URI is never followed.
func (o *oauthProvider) Fail(c echo.Context, query url.Values, err error) error {
	ar, _ := o.authorizeRequest(c, query)
	o.writeAuthorizeError(c, ar, err)
	return nil
}

// Deny answers access_denied: the user declined.
func (o *oauthProvider) Deny(c echo.Context, query url.Values) error {
	ar, err := o.authorizeRequest(c, query)
	if err != nil {
		o.writeAuthorizeError(c, ar, err)
		return nil
	}
	o.writeAuthorizeError(c, ar, fosite.ErrAccessDenied.WithHint("The user declined."))
	return nil
}

// Finish answers the request for account, which has just granted the
// requested scopes to the client: a redirect with the code (or, for the
// implicit grant, the access token in the fragment) and the state. The code
// or token is a fact in the ledger before the redirect is written.
func (o *oauthProvider) Finish(c echo.Context, query url.Values, accountID uuid.UUID) error {
	ar, err := o.authorizeRequest(c, query)
	if err != nil {
		o.writeAuthorizeError(c, ar, err)
		return nil
	}
	ctx := commands.WithActor(c.Request().Context(), "account:"+accountID.String())
	if err := o.checkGrant(ctx, accountID, ar); err != nil {
		o.writeAuthorizeError(c, ar, err)
		return nil
	}
	for _, s := range ar.GetRequestedScopes() {
		ar.GrantScope(s)
	}
	for _, a := range ar.GetRequestedAudience() {
		ar.GrantAudience(a)
	}
	ctx, x := withExchange(ctx)
	resp, err := o.fosite.NewAuthorizeResponse(ctx, ar, newSession(accountID.String()))
	if err != nil {
		o.writeAuthorizeError(c, ar, err)
		return nil
	}
	if err := x.commit(ctx, o.store.cmds); err != nil {
		o.writeAuthorizeError(c, ar, err)
		return nil
	}
	if ar.GetState() == "" {
		resp.GetParameters().Del("state") // RFC 6749 §4.1.2: only when the client sent one
	}
	o.fosite.WriteAuthorizeResponse(ctx, c.Response(), ar, resp)
	return nil
}

// issueCode issues an authorization code for accountID to client, bound to
// redirectURI, without a browser: a partner that creates an account (POST
// /v1/partner/accounts) receives the code in the answer and redeems it at
// the token endpoint with its own credentials. The request is built as the
// authorization endpoint would have parsed it and goes through the same
// handlers and storage, so the code is a recorded fact (consent.code-issued)
// bound to the client, the redirect URI and the account's grant, like any
// other. No PKCE challenge: the code travels on the back channel only, in
// the answer to a client-authenticated request, never through a browser or
// a redirect, which is what PKCE protects; the exchange still requires the
// client's secret. The grant must be recorded first (checkGrant).
func (o *oauthProvider) issueCode(ctx context.Context, client *oauthClient, redirectURI string, accountID uuid.UUID, scopes []string) (string, error) {
	if client.IsPublic() || !slices.Contains(client.redirectURIs, redirectURI) {
		return "", fosite.ErrInvalidRequest.WithHint("Codes without a browser are issued to confidential clients, on a registered redirect URI.")
	}
	return o.issueCodeFor(ctx, client, redirectURI, accountID, scopes, "")
}

// issueCodeFor issues a code as the authorization endpoint would for the
// request it builds, with an S256 PKCE challenge when one is given.
func (o *oauthProvider) issueCodeFor(ctx context.Context, client *oauthClient, redirectURI string, accountID uuid.UUID, scopes []string, challenge string) (string, error) {
	redirect, err := url.Parse(redirectURI)
	if err != nil {
		return "", fosite.ErrInvalidRequest.WithWrap(err)
	}
	ar := fosite.NewAuthorizeRequest()
	ar.Client = client
	ar.RedirectURI = redirect
	ar.ResponseTypes = fosite.Arguments{"code"}
	ar.RequestedScope = scopes
	ar.Form = url.Values{"client_id": {client.GetID()}, "redirect_uri": {redirectURI}, "response_type": {"code"},
		"scope": {strings.Join(scopes, " ")}}
	if challenge != "" {
		ar.Form.Set("code_challenge", challenge)
		ar.Form.Set("code_challenge_method", "S256")
	}
	for _, s := range scopes {
		ar.GrantScope(s)
	}
	if err := o.checkGrant(ctx, accountID, ar); err != nil {
		return "", err
	}
	ctx, x := withExchange(ctx)
	resp, err := o.fosite.NewAuthorizeResponse(ctx, ar, newSession(accountID.String()))
	if err != nil {
		return "", err
	}
	if err := x.commit(ctx, o.store.cmds); err != nil {
		return "", err
	}
	return resp.GetCode(), nil
}

// checkGrant makes sure the account's grant to the client, as recorded,
// covers what is about to be issued: the prompt records the consent first.
func (o *oauthProvider) checkGrant(ctx context.Context, accountID uuid.UUID, ar fosite.AuthorizeRequester) error {
	var status string
	var scopes []string
	err := o.store.pool.QueryRow(ctx, `SELECT status, scopes FROM consents WHERE account_id = $1 AND client_id = $2`,
		accountID, ar.GetClient().(*oauthClient).id).Scan(&status, &scopes)
	if errors.Is(err, pgx.ErrNoRows) {
		return fosite.ErrAccessDenied.WithHint("The user has not granted access to this client.")
	}
	if err != nil {
		return err
	}
	for _, s := range ar.GetRequestedScopes() {
		if status != "granted" || !slices.Contains(scopes, s) {
			return fosite.ErrAccessDenied.WithHint("The user has not granted the requested scopes to this client.")
		}
	}
	return nil
}

// writeAuthorizeError redirects the error to the client when its redirect
// URI can be trusted, else shows it on a page: a person is reading.
func (o *oauthProvider) writeAuthorizeError(c echo.Context, ar fosite.AuthorizeRequester, err error) {
	rfc := o.rfcError(c, err)
	if ar == nil {
		ar = fosite.NewAuthorizeRequest()
	}
	if ar.IsRedirectURIValid() {
		o.fosite.WriteAuthorizeError(c.Request().Context(), c.Response(), ar, rfc)
		return
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, echo.MIMETextHTMLCharsetUTF8)
	h.Set(echo.HeaderCacheControl, "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	status := http.StatusBadRequest // a page, not a client: no 401 challenge
	if rfc.CodeField >= 500 {
		status = rfc.CodeField
	}
	c.Response().WriteHeader(status)
	_ = promptPage.Execute(c.Response(), page{Step: "error", Error: rfc.GetDescription()})
}

// rfcError turns any error into the RFC 6749 error to show. Failures that
// are not the protocol's (the ledger, the database) become server_error or,
// for a code or refresh token that another request used a moment before,
// invalid_grant; the cause is logged with the request id, never shown.
func (o *oauthProvider) rfcError(c echo.Context, err error) *fosite.RFC6749Error {
	switch {
	case errors.Is(err, consent.ErrCodeUsed):
		return fosite.ErrInvalidGrant.WithHint("The authorization code has already been used.")
	case errors.Is(err, consent.ErrTokenInactive):
		return fosite.ErrInvalidGrant.WithHint("The refresh token was already used.")
	case errors.Is(err, consent.ErrUnknownToken):
		return fosite.ErrInvalidGrant.WithHint("The code or token is not valid.")
	}
	var rfc *fosite.RFC6749Error
	if !errors.As(err, &rfc) {
		rfc = fosite.ErrServerError.WithWrap(err).WithDebug(err.Error())
	}
	if rfc.CodeField >= 500 {
		o.log.Error("oauth request failed", slog.String("request_id", RequestID(c)), slog.String("route", c.Path()),
			slog.String("error", rfc.ErrorField), slog.String("cause", rfc.Debug()))
	}
	return rfc
}

// token is the token endpoint. The changes the protocol makes are appended
// when it has its answer: tokens only when they are handed out; a detected
// replay of a code or refresh token (and the revocations it causes) even
// though the request fails.
func (o *oauthProvider) token(c echo.Context) error {
	ctx, x := withExchange(c.Request().Context())
	rw := c.Response()
	ar, err := o.fosite.NewAccessRequest(ctx, c.Request(), newSession(""))
	if ar != nil && ar.GetClient() != nil && ar.GetClient().GetID() != "" {
		ctx = commands.WithActor(ctx, "client:"+ar.GetClient().GetID())
	}
	if err != nil {
		if families := x.families(); len(families) > 0 {
			o.log.Warn("a used code or refresh token was presented again: its token family is revoked",
				slog.String("request_id", RequestID(c)), slog.Any("families", families))
			if cerr := x.commit(ctx, o.store.cmds); cerr != nil {
				o.rfcError(c, cerr) // logged; the answer is the protocol's error
			}
		}
		o.writeAccessError(c, ar, err)
		return nil
	}
	if ar.GetGrantTypes().ExactOne("client_credentials") {
		for _, s := range ar.GetRequestedScopes() {
			ar.GrantScope(s)
		}
		for _, a := range ar.GetRequestedAudience() {
			ar.GrantAudience(a)
		}
	}
	resp, err := o.fosite.NewAccessResponse(ctx, ar)
	if errors.Is(err, fosite.ErrInvalidatedAuthorizeCode) {
		// Another request used the code between fosite's two reads of it:
		// a replay like any other.
		err = o.replayed(ctx, x)
	}
	if err != nil {
		o.writeAccessError(c, ar, err)
		return nil
	}
	if err := x.commit(ctx, o.store.cmds); err != nil {
		o.writeAccessError(c, ar, err)
		return nil
	}
	// The token was issued during this request: expires_in is its
	// lifetime, not the stored expiry (rounded to the second) minus the
	// time the request took.
	grant := fosite.GrantType(ar.GetGrantTypes()[0])
	resp.SetExpiresIn(fosite.GetEffectiveLifespan(ar.GetClient(), grant, fosite.AccessToken, o.config.GetAccessTokenLifespan(ctx)))
	o.fosite.WriteAccessResponse(ctx, rw, ar, resp)
	return nil
}

// replayed records the replay of the codes the exchange found used, which
// revokes their families; it answers consent.ErrCodeUsed.
func (o *oauthProvider) replayed(ctx context.Context, x *oauthExchange) error {
	err := error(consent.ErrCodeUsed)
	for _, family := range x.families() {
		for _, change := range x.changesOf(family) {
			if d, ok := change.(*consent.CodeReplayDetected); ok {
				if rerr := o.store.cmds.RecordOAuth(ctx, family, []any{&consent.CodeUsed{RequestID: family, Signature: d.Signature}}); rerr != nil && !errors.Is(rerr, consent.ErrCodeUsed) {
					err = rerr
				}
			}
		}
	}
	return err
}

// introspect is RFC 7662. Any authenticated client may introspect any
// token (fosite's default, which the RFC allows). A token that is unknown,
// expired, revoked, rotated, or unreadable for any reason is active:false.
// The common request is answered from memory (introspectFromMemory), with
// the answer fosite gives here.
func (o *oauthProvider) introspect(c echo.Context) error {
	if o.introspectFromMemory(c) {
		return nil
	}
	ctx := c.Request().Context()
	rw := c.Response()
	ir, err := o.fosite.NewIntrospectionRequest(ctx, c.Request(), newSession(""))
	switch {
	case err == nil:
	case errors.Is(err, fosite.ErrInactiveToken):
		return writeOAuthJSON(c, http.StatusOK, map[string]any{"active": false})
	case errors.Is(err, fosite.ErrRequestUnauthorized):
		o.writeAccessError(c, nil, fosite.ErrInvalidClient.WithHint("Authenticate with the client's id and secret (HTTP Basic)."))
		return nil
	default:
		o.fosite.WriteIntrospectionError(ctx, rw, err)
		return nil
	}
	ar := ir.GetAccessRequester()
	use := ir.GetTokenUse()
	out := map[string]any{
		"active":    true,
		"client_id": ar.GetClient().GetID(),
		"iss":       o.issuer(c),
		"token_use": string(use),
		"iat":       ar.GetRequestedAt().Unix(),
	}
	if use == fosite.AccessToken {
		out["token_type"] = "Bearer"
	}
	if scopes := ar.GetGrantedScopes(); len(scopes) > 0 {
		out["scope"] = strings.Join(scopes, " ")
	}
	if exp := ar.GetSession().GetExpiresAt(fosite.TokenType(use)); !exp.IsZero() {
		out["exp"] = exp.Unix()
	}
	if sub := ar.GetSession().GetSubject(); sub != "" {
		out["sub"] = sub
	}
	if aud := ar.GetGrantedAudience(); len(aud) > 0 {
		out["aud"] = aud
	}
	return writeOAuthJSON(c, http.StatusOK, out)
}

// revoke is RFC 7009: revoking either token of a grant ends both, an
// unknown or already revoked token answers 200 as well, and the revocation
// is in the read models — introspection answers active:false — before the
// 200 is sent. A failure to record it answers 503, so the client retries.
func (o *oauthProvider) revoke(c echo.Context) error {
	ctx, x := withExchange(c.Request().Context())
	x.byClient = true
	err := o.fosite.NewRevocationRequest(ctx, c.Request())
	if err == nil {
		// The client authenticated: it is who revokes.
		id, _, ok := c.Request().BasicAuth()
		if !ok {
			id = c.Request().PostForm.Get("client_id")
		}
		if err = x.commit(commands.WithActor(ctx, "client:"+id), o.store.cmds); err != nil {
			o.rfcError(c, err)
			err = fosite.ErrTemporarilyUnavailable
		}
	}
	if err != nil {
		o.writeAccessError(c, nil, err)
		return nil
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	c.Response().WriteHeader(http.StatusOK)
	return nil
}

// writeAccessError answers an error of the token, introspection or
// revocation endpoint; a 401 names the authentication scheme expected
// (RFC 6749 §5.2).
func (o *oauthProvider) writeAccessError(c echo.Context, ar fosite.AccessRequester, err error) {
	rfc := o.rfcError(c, err)
	if rfc.CodeField == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Basic realm="oauth2"`)
	}
	o.fosite.WriteAccessError(c.Request().Context(), c.Response(), ar, rfc)
}

// metadata is the RFC 8414 authorization server metadata.
func (o *oauthProvider) metadata(c echo.Context) error {
	iss := o.issuer(c)
	auth := []string{"client_secret_basic", "client_secret_post", "none"}
	c.Response().Header().Set(echo.HeaderCacheControl, "public, max-age=3600")
	return c.JSON(http.StatusOK, map[string]any{
		"issuer":                                        iss,
		"authorization_endpoint":                        iss + "/oauth2/authorize",
		"token_endpoint":                                iss + "/oauth2/token",
		"introspection_endpoint":                        iss + "/oauth2/introspect",
		"revocation_endpoint":                           iss + "/oauth2/revoke",
		"response_types_supported":                      []string{"code", "token"},
		"response_modes_supported":                      []string{"query", "fragment"},
		"grant_types_supported":                         []string{"authorization_code", "refresh_token", "client_credentials", "implicit"},
		"code_challenge_methods_supported":              []string{"S256"},
		"token_endpoint_auth_methods_supported":         auth,
		"revocation_endpoint_auth_methods_supported":    auth,
		"introspection_endpoint_auth_methods_supported": []string{"client_secret_basic"},
		"scopes_supported":                              consent.Scopes(),
	})
}

func writeOAuthJSON(c echo.Context, status int, body any) error {
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	c.Response().Header().Set("Pragma", "no-cache")
	return c.JSON(status, body)
}

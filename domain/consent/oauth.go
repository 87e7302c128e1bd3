package consent

import (
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain"
)

// OAuth2 token families. Every authorization code and token issued for one
// authorization — fosite's request id, kept across refreshes — lives in the
// stream "oauth-<requestId>". Using a code, rotating a refresh token and
// revoking are decided on that stream, so a code is used once and a refresh
// token rotated once even when two requests race, and a replay ends the
// whole family.
//
// The events hold fosite's token signatures (the HMAC half of a token, which
// cannot be turned back into a token) and what is needed to answer for the
// token later: never a token, a code or a client secret.
const (
	TypeCodeIssued           = "consent.code-issued.v1"
	TypeTokenIssued          = "consent.token-issued.v1"
	TypeCodeUsed             = "consent.code-used.v1"
	TypeRefreshTokenRotated  = "consent.refresh-token-rotated.v1"
	TypeTokenRevoked         = "consent.token-revoked.v1"
	TypeCodeReplayDetected   = "consent.code-replay-detected.v1"
	TypeRefreshReuseDetected = "consent.refresh-reuse-detected.v1"
)

// TokenStream is the stream of one token family.
func TokenStream(requestID string) string { return "oauth-" + requestID }

// Token kinds, as fosite names them.
const (
	KindAuthorizeCode = "authorize_code"
	KindAccessToken   = "access_token"
	KindRefreshToken  = "refresh_token"
)

// Why tokens were revoked.
const (
	// RevokedByClient: the client revoked a token (RFC 7009), which ends the
	// family's access and refresh tokens alike.
	RevokedByClient = "client-revocation"
	// RevokedCodeReplay: the family's code was presented again; RFC 6749
	// §4.1.2 asks to revoke what it issued.
	RevokedCodeReplay = "code-replay"
	// RevokedRefreshReuse: a rotated refresh token was presented again, so
	// someone holds a copy (RFC 6819 §5.2.2.3).
	RevokedRefreshReuse = "refresh-reuse"
	// RevokedDeleted: the protocol dropped a single token.
	RevokedDeleted = "deleted"
)

// TokenGrant is what a code or token was issued for: enough to answer for it
// later without the token itself.
type TokenGrant struct {
	RequestID string    `json:"requestId"`
	ClientID  uuid.UUID `json:"clientId"`
	// AccountID is the end user; absent for client credentials.
	AccountID         *uuid.UUID `json:"accountId,omitempty"`
	GrantType         string     `json:"grantType"` // authorization_code, refresh_token, client_credentials, implicit
	RequestedScopes   []string   `json:"requestedScopes"`
	GrantedScopes     []string   `json:"grantedScopes"`
	RequestedAudience []string   `json:"requestedAudience,omitempty"`
	GrantedAudience   []string   `json:"grantedAudience,omitempty"`
	RequestedAt       time.Time  `json:"requestedAt"`
	ExpiresAt         time.Time  `json:"expiresAt"`
}

// CodeIssued: an authorization code was handed out. The PKCE challenge
// (a hash of the client's verifier) binds it to the client that asked.
type CodeIssued struct {
	Signature string `json:"signature"`
	TokenGrant
	RedirectURI         string `json:"redirectUri,omitempty"`
	CodeChallenge       string `json:"codeChallenge,omitempty"`
	CodeChallengeMethod string `json:"codeChallengeMethod,omitempty"`
}

// TokenIssued: an access or refresh token was handed out.
type TokenIssued struct {
	Signature string `json:"signature"`
	Kind      string `json:"kind"` // access_token, refresh_token
	// AccessSignature names the access token a refresh token came with.
	AccessSignature string `json:"accessSignature,omitempty"`
	TokenGrant
}

// CodeUsed: the code was exchanged; it never works again.
type CodeUsed struct {
	RequestID string `json:"requestId"`
	Signature string `json:"signature"`
}

// RefreshTokenRotated: the refresh token was exchanged for a new pair; a
// later use of it is reuse. The family's access tokens issued before are
// superseded with it: a refresh is not a revocation, so no token-revoked
// event (and no partner notification) follows from one.
type RefreshTokenRotated struct {
	RequestID            string   `json:"requestId"`
	Signature            string   `json:"signature"`
	SupersededSignatures []string `json:"supersededSignatures,omitempty"`
}

// TokenRevoked ends the named tokens of a family, all of one kind.
type TokenRevoked struct {
	RequestID  string     `json:"requestId"`
	ClientID   uuid.UUID  `json:"clientId"`
	AccountID  *uuid.UUID `json:"accountId,omitempty"`
	Kind       string     `json:"kind"`
	Signatures []string   `json:"signatures"`
	Reason     string     `json:"reason"`
}

// CodeReplayDetected: a used code was presented again.
type CodeReplayDetected struct {
	RequestID string     `json:"requestId"`
	ClientID  uuid.UUID  `json:"clientId"`
	AccountID *uuid.UUID `json:"accountId,omitempty"`
	Signature string     `json:"signature"`
}

// RefreshReuseDetected: a rotated refresh token was presented again.
type RefreshReuseDetected struct {
	RequestID string     `json:"requestId"`
	ClientID  uuid.UUID  `json:"clientId"`
	AccountID *uuid.UUID `json:"accountId,omitempty"`
	Signature string     `json:"signature"`
}

// oauthPayload is the decode table of the token events.
func oauthPayload(eventType string) any {
	switch eventType {
	case TypeCodeIssued:
		return &CodeIssued{}
	case TypeTokenIssued:
		return &TokenIssued{}
	case TypeCodeUsed:
		return &CodeUsed{}
	case TypeRefreshTokenRotated:
		return &RefreshTokenRotated{}
	case TypeTokenRevoked:
		return &TokenRevoked{}
	case TypeCodeReplayDetected:
		return &CodeReplayDetected{}
	case TypeRefreshReuseDetected:
		return &RefreshReuseDetected{}
	}
	return nil
}

func oauthTypeOf(payload any) string {
	switch payload.(type) {
	case *CodeIssued:
		return TypeCodeIssued
	case *TokenIssued:
		return TypeTokenIssued
	case *CodeUsed:
		return TypeCodeUsed
	case *RefreshTokenRotated:
		return TypeRefreshTokenRotated
	case *TokenRevoked:
		return TypeTokenRevoked
	case *CodeReplayDetected:
		return TypeCodeReplayDetected
	case *RefreshReuseDetected:
		return TypeRefreshReuseDetected
	}
	return ""
}

// Scopes lists every scope a client may be registered with (RFC 8414
// scopes_supported).
func Scopes() []string { return slices.Clone(knownScopes) }

var (
	// ErrCodeUsed: the code was exchanged before. The family's tokens are
	// revoked with this answer.
	ErrCodeUsed = domain.New(domain.KindConflict, "authorization_code_used", "the authorization code was already used")
	// ErrTokenInactive: the refresh token was rotated or revoked before.
	ErrTokenInactive = domain.New(domain.KindConflict, "token_inactive", "the token was already used or revoked")
	// ErrUnknownToken: no such code or token in the family.
	ErrUnknownToken = domain.New(domain.KindNotFound, "unknown_token", "no such token")
)

// Token statuses in a family.
const (
	tokenActive  = "active"
	tokenUsed    = "used"
	tokenRotated = "rotated"
	tokenRevoked = "revoked"
)

type familyToken struct {
	kind   string
	status string
}

// TokenFamily is the state folded from one token family's stream.
type TokenFamily struct {
	requestID string
	client    uuid.UUID
	account   *uuid.UUID
	tokens    map[string]*familyToken // by signature
	order     []string                // signatures in issue order, for stable events
}

func (f *TokenFamily) Apply(event any, _ time.Time) {
	if f.tokens == nil {
		f.tokens = map[string]*familyToken{}
	}
	switch e := event.(type) {
	case *CodeIssued:
		f.issue(e.Signature, KindAuthorizeCode, e.TokenGrant)
	case *TokenIssued:
		f.issue(e.Signature, e.Kind, e.TokenGrant)
	case *CodeUsed:
		f.set(e.Signature, tokenUsed)
	case *RefreshTokenRotated:
		f.set(e.Signature, tokenRotated)
		for _, s := range e.SupersededSignatures {
			f.set(s, tokenRevoked)
		}
	case *TokenRevoked:
		for _, s := range e.Signatures {
			f.set(s, tokenRevoked)
		}
	}
}

func (f *TokenFamily) issue(sig, kind string, g TokenGrant) {
	if f.requestID == "" {
		f.requestID, f.client, f.account = g.RequestID, g.ClientID, g.AccountID
	}
	f.tokens[sig] = &familyToken{kind: kind, status: tokenActive}
	f.order = append(f.order, sig)
}

func (f *TokenFamily) set(sig, status string) {
	if t, ok := f.tokens[sig]; ok {
		t.status = status
	}
}

// Record decides what an OAuth2 exchange changes in the family. changes are
// the exchange's events in the order the protocol made them; each is checked
// against the state left by the ones before:
//
//   - a code or token is issued once per signature, for this family;
//   - a code is used once: using it again records the replay, revokes the
//     family's access and refresh tokens and answers ErrCodeUsed, dropping
//     the rest of the exchange;
//   - a refresh token is rotated once, superseding the family's access
//     tokens: rotating it again records the reuse, revokes the family and
//     answers ErrTokenInactive; a revoked one answers ErrTokenInactive;
//   - a revocation with no signatures means every active token of its kind;
//     it names the tokens it ends, and is dropped when it ends none.
//
// The events it returns are appended even with an error: a detected replay
// is a fact worth keeping.
func (f *TokenFamily) Record(changes []any) ([]any, error) {
	if f.tokens == nil {
		f.tokens = map[string]*familyToken{}
	}
	// Uses are checked first, on the state as read, so that a replay ends
	// the family without any of the exchange's other changes.
	for _, c := range changes {
		switch e := c.(type) {
		case *CodeUsed:
			if t := f.tokens[e.Signature]; t != nil && t.kind == KindAuthorizeCode && t.status == tokenUsed {
				return f.endFamily(&CodeReplayDetected{Signature: e.Signature}, RevokedCodeReplay), ErrCodeUsed
			}
		case *RefreshTokenRotated:
			if t := f.tokens[e.Signature]; t != nil && t.kind == KindRefreshToken && t.status == tokenRotated {
				return f.endFamily(&RefreshReuseDetected{Signature: e.Signature}, RevokedRefreshReuse), ErrTokenInactive
			}
		}
	}
	var out []any
	accept := func(e any) {
		f.Apply(e, time.Time{})
		out = append(out, e)
	}
	for _, c := range changes {
		switch e := c.(type) {
		case *CodeIssued:
			if err := f.checkIssue(e.Signature, e.TokenGrant); err != nil {
				return nil, err
			}
			accept(e)
		case *TokenIssued:
			if e.Kind != KindAccessToken && e.Kind != KindRefreshToken {
				return nil, fmt.Errorf("oauth: cannot issue a token of kind %q", e.Kind)
			}
			if err := f.checkIssue(e.Signature, e.TokenGrant); err != nil {
				return nil, err
			}
			accept(e)
		case *CodeUsed:
			t := f.tokens[e.Signature]
			switch {
			case t == nil || t.kind != KindAuthorizeCode:
				return nil, ErrUnknownToken
			case t.status != tokenActive:
				return nil, ErrCodeUsed
			}
			accept(&CodeUsed{RequestID: f.requestID, Signature: e.Signature})
		case *RefreshTokenRotated:
			t := f.tokens[e.Signature]
			switch {
			case t == nil || t.kind != KindRefreshToken:
				return nil, ErrUnknownToken
			case t.status != tokenActive:
				return nil, ErrTokenInactive
			}
			accept(&RefreshTokenRotated{RequestID: f.requestID, Signature: e.Signature, SupersededSignatures: f.active(KindAccessToken, nil)})
		case *TokenRevoked:
			if ev := f.revoke(e.Kind, e.Signatures, e.Reason); ev != nil {
				accept(ev)
			}
		case *CodeReplayDetected:
			if f.requestID == "" {
				return nil, ErrUnknownToken
			}
			accept(&CodeReplayDetected{RequestID: f.requestID, ClientID: f.client, AccountID: f.account, Signature: e.Signature})
		case *RefreshReuseDetected:
			if f.requestID == "" {
				return nil, ErrUnknownToken
			}
			accept(&RefreshReuseDetected{RequestID: f.requestID, ClientID: f.client, AccountID: f.account, Signature: e.Signature})
		default:
			return nil, fmt.Errorf("oauth: %T is not a token family change", c)
		}
	}
	return out, nil
}

func (f *TokenFamily) checkIssue(sig string, g TokenGrant) error {
	switch {
	case sig == "" || g.RequestID == "" || g.ClientID == uuid.Nil:
		return fmt.Errorf("oauth: a code or token needs a signature, a request id and a client")
	case f.requestID != "" && (g.RequestID != f.requestID || g.ClientID != f.client):
		return fmt.Errorf("oauth: request %s of client %s cannot join family %s", g.RequestID, g.ClientID, f.requestID)
	case f.tokens[sig] != nil:
		return fmt.Errorf("oauth: signature issued twice in family %s", f.requestID)
	}
	return nil
}

// endFamily records a detected replay and revokes every active access and
// refresh token of the family.
func (f *TokenFamily) endFamily(detected any, reason string) []any {
	var out []any
	switch d := detected.(type) {
	case *CodeReplayDetected:
		d.RequestID, d.ClientID, d.AccountID = f.requestID, f.client, f.account
	case *RefreshReuseDetected:
		d.RequestID, d.ClientID, d.AccountID = f.requestID, f.client, f.account
	}
	out = append(out, detected)
	for _, kind := range []string{KindAccessToken, KindRefreshToken} {
		if ev := f.revoke(kind, nil, reason); ev != nil {
			f.Apply(ev, time.Time{})
			out = append(out, ev)
		}
	}
	return out
}

// revoke returns the event ending the active tokens of kind (only those
// named, when sigs is not empty), or nil when there are none.
func (f *TokenFamily) revoke(kind string, sigs []string, reason string) *TokenRevoked {
	ended := f.active(kind, sigs)
	if len(ended) == 0 {
		return nil
	}
	return &TokenRevoked{RequestID: f.requestID, ClientID: f.client, AccountID: f.account, Kind: kind, Signatures: ended, Reason: reason}
}

// active lists the active tokens of kind, in issue order (only those named,
// when sigs is not empty).
func (f *TokenFamily) active(kind string, sigs []string) []string {
	var out []string
	for _, s := range f.order {
		t := f.tokens[s]
		if t.kind == kind && t.status == tokenActive && (len(sigs) == 0 || slices.Contains(sigs, s)) {
			out = append(out, s)
		}
	}
	return out
}

package projections

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/eventstore"
)

// OAuthTokens is the token-validity read model: which authorization codes,
// access tokens and refresh tokens exist, for what, and whether they still
// work. The OAuth2 endpoints read it; commands wait for it before they
// answer, so a revocation is visible to the next introspection.
type OAuthTokens struct{}

func (OAuthTokens) Name() string     { return "oauth_tokens" }
func (OAuthTokens) Tables() []string { return []string{"oauth_tokens"} }

func (OAuthTokens) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	switch ev.Type {
	case consent.TypeCodeIssued, consent.TypeTokenIssued, consent.TypeCodeUsed,
		consent.TypeRefreshTokenRotated, consent.TypeTokenRevoked:
	default:
		return nil
	}
	payload, err := consent.Decode(ev.Type, ev.Data)
	if err != nil {
		return err
	}
	at := ev.Metadata.OccurredAt
	switch e := payload.(type) {
	case *consent.CodeIssued:
		err = insertToken(ctx, tx, e.Signature, consent.KindAuthorizeCode, e.TokenGrant, e.RedirectURI, e.CodeChallenge, e.CodeChallengeMethod, nil, at)
	case *consent.TokenIssued:
		var access *string
		if e.AccessSignature != "" {
			access = &e.AccessSignature
		}
		err = insertToken(ctx, tx, e.Signature, e.Kind, e.TokenGrant, "", "", "", access, at)
	case *consent.CodeUsed:
		_, err = tx.Exec(ctx, `UPDATE oauth_tokens SET status = 'used', ended_reason = 'used', ended_at = $2
			WHERE signature = $1 AND status = 'active'`, e.Signature, at)
	case *consent.RefreshTokenRotated:
		_, err = tx.Exec(ctx, `UPDATE oauth_tokens SET status = 'rotated', ended_reason = 'rotated', ended_at = $2
			WHERE signature = $1 AND status = 'active'`, e.Signature, at)
		if err == nil && len(e.SupersededSignatures) > 0 {
			_, err = tx.Exec(ctx, `UPDATE oauth_tokens SET status = 'revoked', ended_reason = 'superseded', ended_at = $2
				WHERE signature = ANY($1) AND status = 'active'`, e.SupersededSignatures, at)
		}
	case *consent.TokenRevoked:
		_, err = tx.Exec(ctx, `UPDATE oauth_tokens SET status = 'revoked', ended_reason = $2, ended_at = $3
			WHERE signature = ANY($1) AND status = 'active'`, e.Signatures, e.Reason, at)
	}
	return err
}

func insertToken(ctx context.Context, tx pgx.Tx, sig, kind string, g consent.TokenGrant, redirect, challenge, method string, access *string, at time.Time) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO oauth_tokens (signature, kind, request_id, client_id, account_id, grant_type,
			requested_scopes, granted_scopes, requested_audience, granted_audience,
			redirect_uri, code_challenge, code_challenge_method, access_signature,
			requested_at, expires_at, status, issued_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 'active', $17)`,
		sig, kind, g.RequestID, g.ClientID, g.AccountID, g.GrantType,
		nonNil(g.RequestedScopes), nonNil(g.GrantedScopes), nonNil(g.RequestedAudience), nonNil(g.GrantedAudience),
		redirect, challenge, method, access, g.RequestedAt, g.ExpiresAt, at)
	return err
}

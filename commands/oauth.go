package commands

import (
	"context"
	"errors"
	"time"

	"github.com/consentledger/ledger/domain/consent"
)

// RecordOAuth records what one OAuth2 exchange (an authorization, a token
// request, a revocation) changes in one token family, fosite's request id:
// codes and tokens issued, a code used, a refresh token rotated, tokens
// revoked, a replay detected. consent.TokenFamily.Record decides them on the
// family's stream; they are appended together or not at all, at the revision
// they were decided on, so two requests racing with one code or one refresh
// token cannot both win.
//
// It returns once the read models include the append: a token revoked here
// is inactive for the very next introspection, and a token issued here
// works for the very next call.
func (h *Handler) RecordOAuth(ctx context.Context, requestID string, changes []any) error {
	if requestID == "" {
		return errors.New("oauth: a token family needs a request id")
	}
	return decide(ctx, h, consent.TokenStream(requestID), consentArea,
		func() *consent.TokenFamily { return &consent.TokenFamily{} },
		func(f *consent.TokenFamily, _ time.Time) ([]any, error) { return f.Record(changes) })
}

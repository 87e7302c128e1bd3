package api

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/google/uuid"
	"github.com/ory/fosite"
)

// CodeIssuer issues authorization codes as the authorization endpoint does
// once the consent prompt is done, without the prompt's pages: for load
// generators (cmd/ledger-bench) that measure the token endpoint. Codes go
// through the same protocol handlers and storage as the prompt's — a
// recorded consent.code-issued fact, single use, ten minutes, bound to the
// client, the redirect URI and the PKCE challenge — and only for an account
// whose recorded grant covers the scopes. cfg must hold the serving
// server's OAuth secret (Server.Config), or the server cannot read the
// codes.
type CodeIssuer struct{ o *oauthProvider }

// NewCodeIssuer builds an issuer for the server configured with cfg and app.
func NewCodeIssuer(cfg Config, app App, log *slog.Logger) *CodeIssuer {
	if log == nil {
		log = slog.Default()
	}
	return &CodeIssuer{o: newOAuthProvider(cfg, app, log)}
}

// Issue returns a code for account, bound to the client's redirectURI and
// to an S256 PKCE challenge.
func (i *CodeIssuer) Issue(ctx context.Context, clientID uuid.UUID, redirectURI string, account uuid.UUID, scopes []string, challenge string) (string, error) {
	c, err := i.o.store.GetClient(ctx, clientID.String())
	if err != nil {
		return "", fmt.Errorf("client %s: %w", clientID, err)
	}
	client := c.(*oauthClient)
	if !slices.Contains(client.redirectURIs, redirectURI) {
		return "", fosite.ErrInvalidRequest.WithHint("The redirect URI is not registered for this client.")
	}
	return i.o.issueCodeFor(ctx, client, redirectURI, account, scopes, challenge)
}

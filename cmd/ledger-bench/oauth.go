package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain/consent"
)

// introspectResult is the introspection row measured twice: with Go's
// net/http client, which decodes each answer's JSON, and with a
// load generator's client (rawClient) that leaves the CPU to the server.
type introspectResult struct {
	netHTTP, lean enrollResult
}

// measureIntrospection has clients introspect one client-credentials
// token (RFC 7662, client-authenticated) over HTTP: what a resource server
// of a partner does on every call it serves.
func measureIntrospection(ctx context.Context, cfg Config, srv *benchServer) (introspectResult, error) {
	reg, err := srv.post(ctx, "/v1/admin/clients", "application/json",
		`{"name":"bench","grantTypes":["client_credentials"],"scopes":["accounts:create"]}`, "Bearer "+benchAdminToken, "")
	if err != nil {
		return introspectResult{}, fmt.Errorf("register a client: %w", err)
	}
	id, secret := reg["clientId"].(string), reg["clientSecret"].(string)
	tok, err := srv.post(ctx, "/oauth2/token", "application/x-www-form-urlencoded",
		url.Values{"grant_type": {"client_credentials"}, "scope": {"accounts:create"}}.Encode(), "", id+":"+secret)
	if err != nil {
		return introspectResult{}, fmt.Errorf("client-credentials token: %w", err)
	}
	form := url.Values{"token": {tok["access_token"].(string)}}.Encode()
	r, err := measure(ctx, cfg.IntrospectClients, cfg.Warmup, cfg.Duration, func(int) func(context.Context) error {
		return func(ctx context.Context) error {
			answer, err := srv.post(ctx, "/oauth2/introspect", "application/x-www-form-urlencoded", form, "", id+":"+secret)
			if err == nil && answer["active"] != true {
				err = fmt.Errorf("introspection answered %v", answer)
			}
			return err
		}
	})
	if err != nil {
		return introspectResult{}, err
	}
	out := introspectResult{netHTTP: enrollResult{clients: cfg.IntrospectClients, result: r}}

	conns := make([]*rawClient, cfg.IntrospectClients)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range conns {
		if conns[i], err = newRawClient(ctx, srv.url, "/oauth2/introspect", form, id, secret); err != nil {
			return introspectResult{}, err
		}
	}
	active := []byte(`"active":true`)
	r, err = measure(ctx, cfg.IntrospectClients, cfg.Warmup, cfg.Duration, func(i int) func(context.Context) error {
		c := conns[i]
		return func(context.Context) error { return c.do(active) }
	})
	out.lean = enrollResult{clients: cfg.IntrospectClients, result: r}
	return out, err
}

// post sends a request and decodes a 2xx JSON answer. auth is an
// Authorization header value, basic is "id:secret" for HTTP Basic.
func (b *benchServer) post(ctx context.Context, path, contentType, body, auth, basic string) (map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if id, secret, ok := strings.Cut(basic, ":"); ok {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s: HTTP %d %s", path, resp.StatusCode, raw)
	}
	var out map[string]any
	return out, json.Unmarshal(raw, &out)
}

// measureCodeExchange has clients redeem authorization codes with PKCE at
// the token endpoint (authorization_code, HTTP Basic): what a partner's
// back end does once a user finished the consent prompt. The codes are
// issued first, through the protocol (api.CodeIssuer), for accounts that
// granted the scope; each exchange uses one, so the row needs as many codes
// as its clients redeem during the warm-up and the measured window.
func measureCodeExchange(ctx context.Context, cfg Config, srv *benchServer) (enrollResult, error) {
	const redirect = "https://bench.example/cb"
	reg, err := srv.post(ctx, "/v1/admin/clients", "application/json",
		`{"name":"bench-app","redirectUris":["`+redirect+`"],"scopes":["account:profile"]}`, "Bearer "+benchAdminToken, "")
	if err != nil {
		return enrollResult{}, fmt.Errorf("register a client: %w", err)
	}
	id, secret := reg["clientId"].(string), reg["clientSecret"].(string)
	client, err := uuid.Parse(id)
	if err != nil {
		return enrollResult{}, err
	}
	type code struct{ code, verifier string }
	codes := make(chan code, cfg.ExchangeCodes)
	issue := func(ctx context.Context) error {
		acct := uuid.New()
		if _, err := srv.setup.DecideConsent(ctx, commands.ConsentDecision{AccountID: acct, ClientID: client, Accept: true,
			Scopes: []string{consent.ScopeProfile}, NoticeVersion: "bench", CollectionMethod: "hosted-consent-prompt"}); err != nil {
			return fmt.Errorf("grant: %w", err)
		}
		for range 10 {
			if len(codes) == cap(codes) {
				return nil
			}
			verifier := rand.Text() + rand.Text()
			sum := sha256.Sum256([]byte(verifier))
			c, err := srv.codes.Issue(ctx, client, redirect, acct, []string{consent.ScopeProfile}, base64.RawURLEncoding.EncodeToString(sum[:]))
			if err != nil {
				return fmt.Errorf("issue a code: %w", err)
			}
			codes <- code{c, verifier}
		}
		return nil
	}
	// 16 issuers at a time, each granting one account and issuing ten of
	// its codes.
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		errs  []error
		slots = make(chan struct{}, 16)
	)
	for range (cfg.ExchangeCodes + 9) / 10 {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := issue(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return enrollResult{}, err
	}
	close(codes)
	r, err := measure(ctx, cfg.ExchangeClients, cfg.Warmup, cfg.Duration, func(int) func(context.Context) error {
		return func(ctx context.Context) error {
			c, ok := <-codes
			if !ok {
				return fmt.Errorf("the %d codes issued were all redeemed before the window closed: raise -exchange-codes", cfg.ExchangeCodes)
			}
			form := url.Values{"grant_type": {"authorization_code"}, "code": {c.code}, "redirect_uri": {redirect}, "code_verifier": {c.verifier}}
			answer, err := srv.post(ctx, "/oauth2/token", "application/x-www-form-urlencoded", form.Encode(), "", id+":"+secret)
			if err == nil && answer["access_token"] == nil {
				err = fmt.Errorf("the token endpoint answered %v", answer)
			}
			return err
		}
	})
	return enrollResult{clients: cfg.ExchangeClients, result: r}, err
}

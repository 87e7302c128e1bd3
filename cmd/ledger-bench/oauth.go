package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// measureIntrospection has clients introspect one client-credentials
// token (RFC 7662, client-authenticated) over HTTP: what a resource server
// of a partner does on every call it serves.
func measureIntrospection(ctx context.Context, cfg Config, srv *benchServer) (enrollResult, error) {
	reg, err := srv.post(ctx, "/v1/admin/clients", "application/json",
		`{"name":"bench","grantTypes":["client_credentials"],"scopes":["accounts:create"]}`, "Bearer "+benchAdminToken, "")
	if err != nil {
		return enrollResult{}, fmt.Errorf("register a client: %w", err)
	}
	id, secret := reg["clientId"].(string), reg["clientSecret"].(string)
	tok, err := srv.post(ctx, "/oauth2/token", "application/x-www-form-urlencoded",
		url.Values{"grant_type": {"client_credentials"}, "scope": {"accounts:create"}}.Encode(), "", id+":"+secret)
	if err != nil {
		return enrollResult{}, fmt.Errorf("client-credentials token: %w", err)
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
	return enrollResult{clients: cfg.IntrospectClients, result: r}, err
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

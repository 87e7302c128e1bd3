package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/consentledger/ledger/api"
)

// conformingProxy stands in front of a ledger and checks every exchange
// against the OpenAPI document: the answer must be one the operation
// describes (status, media type, schema), and a request the ledger accepted
// (2xx) must be one the document allows. Requests meant to be refused are
// not held to the request schemas.
type conformingProxy struct {
	t      *testing.T
	doc    *openapi3.T
	paths  []docPath
	mu     sync.Mutex
	seen   map[string]bool // "METHOD /template" exercised
	errors []string
}

type docPath struct {
	template string
	match    *regexp.Regexp
	names    []string
}

func newConformingProxy(t *testing.T, target string) (*conformingProxy, string) {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPIDocument())
	if err != nil {
		t.Fatal(err)
	}
	p := &conformingProxy{t: t, doc: doc, seen: map[string]bool{}}
	param := regexp.MustCompile(`\{([^}]+)\}`)
	for template := range doc.Paths.Map() {
		var names []string
		for _, m := range param.FindAllStringSubmatch(template, -1) {
			names = append(names, m[1])
		}
		literal := strings.NewReplacer(`\{`, "{", `\}`, "}").Replace(regexp.QuoteMeta(template))
		p.paths = append(p.paths, docPath{template: template, match: regexp.MustCompile("^" + param.ReplaceAllString(literal, `([^/]+)`) + "$"), names: names})
	}
	// Literal paths win over templates (/v1/admin/steps/reset).
	sort.Slice(p.paths, func(i, j int) bool { return len(p.paths[i].names) < len(p.paths[j].names) })
	u, _ := url.Parse(target)
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		proxy.ServeHTTP(rec, r)
		p.check(r, body, rec)
		for k, vs := range rec.Header() {
			w.Header()[k] = vs
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		for _, e := range p.errors {
			t.Error(e)
		}
	})
	return p, srv.URL
}

func (p *conformingProxy) fail(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errors = append(p.errors, "the document does not describe what happened: "+fmt.Sprintf(format, args...))
}

func (p *conformingProxy) check(r *http.Request, body []byte, rec *httptest.ResponseRecorder) {
	where := r.Method + " " + r.URL.Path
	var route *routers.Route
	params := map[string]string{}
	for _, dp := range p.paths {
		m := dp.match.FindStringSubmatch(r.URL.Path)
		if m == nil {
			continue
		}
		item := p.doc.Paths.Value(dp.template)
		op := item.GetOperation(r.Method)
		if op == nil {
			continue
		}
		for i, name := range dp.names {
			params[name], _ = url.PathUnescape(m[i+1])
		}
		route = &routers.Route{Spec: p.doc, Path: dp.template, PathItem: item, Method: r.Method, Operation: op}
		break
	}
	if route == nil {
		p.fail("%s has no operation", where)
		return
	}
	p.mu.Lock()
	p.seen[r.Method+" "+route.Path] = true
	p.mu.Unlock()
	req := r.Clone(context.Background())
	req.Body = io.NopCloser(bytes.NewReader(body))
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}}
	if rec.Code < 300 {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			p.fail("%s accepted a request the document does not allow: %v", where, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rec.Code, Header: rec.Header(),
		Body: io.NopCloser(bytes.NewReader(rec.Body.Bytes())), Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		p.fail("%s answered %d %s: %v\n%s", where, rec.Code, rec.Header().Get("Content-Type"), err, rec.Body.String())
	}
}

// TestOpenAPIDescribesAnswers runs a journey through most of the API behind
// the conforming proxy: every answer must match the document.
func TestOpenAPIDescribesAnswers(t *testing.T) {
	l := newLedger(t, nil)
	proxy, proxied := newConformingProxy(t, l.url)
	l.url = proxied
	admin := []string{"Authorization", "Bearer " + adminToken}

	l.do("GET", "/healthz", "").want(t, 200, "")
	l.do("GET", "/readyz", "").want(t, 200, "")
	l.do("GET", "/.well-known/oauth-authorization-server", "").want(t, 200, "")
	l.do("POST", "/v1/accounts", `{"email":`).want(t, 400, "malformed_json")
	token := l.signIn("conform@example.com", "phone-1")
	l.do("POST", "/v1/accounts", js(map[string]string{"email": "conform@example.com", "password": pw})).want(t, 409, "email_taken")
	d := &device{l: l, id: "phone-1", token: token}
	d.rest("GET", "/v1/me", "", 200, "")
	l.do("GET", "/v1/me", "", "Authorization", "Bearer nonsense", "X-Device-Id", "phone-1").want(t, 401, "invalid_session")
	d.rest("POST", "/v1/vehicles", `{"vin":"WVWZZZ1JZXW000001"}`, 201, "")
	d.rest("POST", "/v1/vehicles", `{"vin":"nope"}`, 400, "invalid_vin")
	d.rest("POST", "/v1/vehicles/WVWZZZ1JZXW000001/services", `{"service":"remoteCommands"}`, 201, "")
	d.rest("GET", "/v1/vehicles", "", 200, "")
	d.rest("POST", "/v1/vehicles/WVWZZZ1JZXW000001/carkey/challenge", "", 202, "")
	d.rest("GET", "/v1/me/consents", "", 200, "")
	d.call("/pims/get", "pims.authentication.account", map[string]any{"actionType": "strong", "type": "isDeviceActivated"})
	d.call("/pims/set", "pims.authentication.enrollment", map[string]any{"action": "enroll", "pinCode": "1234"})
	d.rest("DELETE", "/v1/me/consents/"+"00000000-0000-0000-0000-000000000000", "", 404, "no_grant")

	client := l.registerClient(map[string]any{"name": "Conform App", "redirectUris": []string{"https://conform.example/cb"},
		"scopes": []string{"account:profile", "accounts:create"}, "grantTypes": []string{"authorization_code", "client_credentials"}}).want(t, 201, "")
	id, secret := client.body["clientId"].(string), client.body["clientSecret"].(string)
	l.do("POST", "/v1/admin/clients/"+id+"/secret", "", admin...).want(t, 200, "")
	l.do("GET", "/v1/admin/projections", "", admin...).want(t, 200, "")
	l.do("POST", "/v1/admin/projections/nope/rebuild", "", admin...).want(t, 404, "unknown_projection")
	l.do("POST", "/v1/admin/projections/accounts/rebuild", "", admin...).want(t, 202, "")
	l.do("POST", "/v1/admin/steps/reset", "", admin...).want(t, 200, "")
	l.do("GET", "/v1/admin/projections", "").want(t, 401, "admin_token_invalid")
	l.do("GET", "/v1/dev/outbox?to=conform@example.com", "").want(t, 200, "")

	// Partner side: the rotated secret, client credentials, a provisioned account.
	rotated := l.do("POST", "/v1/admin/clients/"+id+"/secret", "", admin...).want(t, 200, "").body["clientSecret"].(string)
	if rotated == secret {
		t.Fatal("rotating the secret kept it")
	}
	req, _ := http.NewRequest("POST", l.url+"/oauth2/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "scope": {"accounts:create"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, rotated)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if tok.AccessToken == "" {
		t.Fatalf("client credentials: HTTP %d", resp.StatusCode)
	}
	partner := []string{"Authorization", "Bearer " + tok.AccessToken}
	l.do("POST", "/v1/partner/accounts", js(map[string]string{"firstName": "Ada", "lastName": "L", "email": "partner-made@example.com", "username": "ada", "password": pw}), partner...).want(t, 201, "")
	l.do("GET", "/v1/partner/consents", "", partner...).want(t, 200, "")
	l.do("GET", "/v1/partner/consents", "", "Authorization", "Bearer nonsense").want(t, 401, "invalid_token")

	d.rest("DELETE", "/v1/vehicles/WVWZZZ1JZXW000001", "", 204, "")
	d.rest("DELETE", "/v1/sessions/current", "", 204, "")

	t.Logf("%d operations exercised against the document", len(proxy.seen))
}

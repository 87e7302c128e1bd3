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
	"github.com/google/uuid"

	"github.com/consentledger/ledger/api"
	"github.com/consentledger/ledger/commands"
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

// ndjsonBodyDecoder checks an NDJSON answer line by line: the document's
// schema describes one line. It returns the last line, which the validator
// checks once more.
func ndjsonBodyDecoder(body io.Reader, header http.Header, schema *openapi3.SchemaRef, enc openapi3filter.EncodingFn) (any, error) {
	var last any
	dec := json.NewDecoder(body)
	for n := 1; dec.More(); n++ {
		var line any
		if err := dec.Decode(&line); err != nil {
			return nil, &openapi3filter.ParseError{Kind: openapi3filter.KindInvalidFormat, Cause: fmt.Errorf("line %d: %w", n, err)}
		}
		if schema != nil && schema.Value != nil {
			if err := schema.Value.VisitJSON(line); err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
		}
		last = line
	}
	return last, nil
}

var registerNDJSON sync.Once

func newConformingProxy(t *testing.T, target string) (*conformingProxy, string) {
	t.Helper()
	registerNDJSON.Do(func() { openapi3filter.RegisterBodyDecoder("application/x-ndjson", ndjsonBodyDecoder) })
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

	// Auditor side: a grant to audit, its receipts, the history, the chain.
	accountID := l.do("POST", "/v1/sessions", js(map[string]string{"email": "conform@example.com", "password": pw, "deviceId": "phone-2"})).
		want(t, 201, "").body["accountId"].(string)
	if _, err := l.cmds.DecideConsent(context.Background(), commands.ConsentDecision{AccountID: uuid.MustParse(accountID), ClientID: uuid.MustParse(id),
		Accept: true, Scopes: []string{"account:profile"}, NoticeVersion: api.NoticeVersion, CollectionMethod: "hosted-consent-prompt"}); err != nil {
		t.Fatal(err)
	}
	d.rest("GET", "/v1/me/consents/"+id+"/receipt", "", 200, "")
	d.rest("GET", "/v1/me/consents/00000000-0000-0000-0000-000000000000/receipt", "", 404, "no_grant")
	auditorID, key := l.issueAuditor("Conform auditor")
	l.do("POST", "/v1/admin/auditors", js(map[string]string{"name": " "}), admin...).want(t, 400, "invalid_auditor_name")
	auditor := []string{"Authorization", "Bearer " + key}
	l.do("GET", "/v1/audit/whoami", "", auditor...).want(t, 200, "")
	l.do("GET", "/v1/audit/whoami", "", admin...).want(t, 401, "auditor_key_invalid")
	l.do("GET", "/v1/audit/public-key", "", auditor...).want(t, 200, "")
	l.do("GET", "/v1/audit/checkpoints?limit=5", "", auditor...).want(t, 200, "")
	l.do("GET", "/v1/audit/checkpoints?limit=0", "", auditor...).want(t, 400, "invalid_limit")
	l.do("GET", "/v1/audit/verify", "", auditor...).want(t, 200, "")
	l.do("GET", "/v1/audit/verify?accountId="+accountID, "", auditor...).want(t, 200, "")
	l.do("GET", "/v1/audit/accounts/"+accountID+"/events", "", auditor...).want(t, 200, "")
	l.do("GET", "/v1/audit/accounts/"+accountID+"/events?from=yesterday", "", auditor...).want(t, 400, "invalid_bound")
	l.do("GET", "/v1/audit/accounts/"+accountID+"/consents", "", auditor...).want(t, 200, "")
	l.do("GET", "/v1/audit/accounts/"+accountID+"/consents?asOf=2000-01-01T00:00:00Z", "", auditor...).want(t, 200, "")
	l.do("GET", "/v1/audit/accounts/00000000-0000-0000-0000-000000000000/consents", "", auditor...).want(t, 404, "unknown_account")
	l.do("GET", "/v1/audit/accounts/"+accountID+"/consents/"+id+"/receipt", "", auditor...).want(t, 200, "")
	l.do("GET", "/v1/audit/clients/"+id+"/consents", "", auditor...).want(t, 200, "")
	l.do("GET", "/v1/audit/clients/"+id+"/consents?asOf=soon", "", auditor...).want(t, 400, "invalid_as_of")
	l.do("DELETE", "/v1/admin/auditors/"+auditorID, "", admin...).want(t, 204, "")
	l.do("GET", "/v1/audit/whoami", "", auditor...).want(t, 401, "auditor_key_invalid")

	d.rest("DELETE", "/v1/vehicles/WVWZZZ1JZXW000001", "", 204, "")
	d.rest("DELETE", "/v1/sessions/current", "", 204, "")
	l.do("POST", "/v1/admin/accounts/"+accountID+"/erase", "", admin...).want(t, 200, "")
	l.do("POST", "/v1/admin/accounts/00000000-0000-0000-0000-000000000000/erase", "", admin...).want(t, 404, "unknown_account")

	t.Logf("%d operations exercised against the document", len(proxy.seen))
}

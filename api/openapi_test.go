package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/api"
	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/migrations/dbtest"
)

// mountedServer is a server with every route `ledger serve` registers in dev
// mode (the dev outbox, the consent prompt over the real protocol).
func mountedServer(t *testing.T) *api.Server {
	t.Helper()
	pool := dbtest.Pool(t)
	s := api.New(api.Config{Dev: true, AdminToken: adminToken}, api.Deps{Pool: pool})
	api.Mount(s, api.App{Pool: pool, DevOutbox: commands.NewMemoryOutbox(1)})
	return s
}

// echoParam is an Echo path parameter (:name), OpenAPI's {name}.
var echoParam = regexp.MustCompile(`:([A-Za-z0-9_]+)`)

// TestOpenAPIMatchesRoutes compares the document with the routes actually
// registered: every route must be described, and every described operation
// must be served. Its message names each difference and, for an
// undocumented route, the entry to add to api/openapi.json.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	s := mountedServer(t)
	served := map[string]bool{}
	for _, r := range s.Echo().Routes() {
		if r.Method == echo.RouteNotFound {
			continue // the 404 answers of groups, not routes
		}
		served[strings.ToUpper(r.Method)+" "+echoParam.ReplaceAllString(r.Path, "{$1}")] = true
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPIDocument(), &doc); err != nil {
		t.Fatalf("api/openapi.json: %v", err)
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for method := range item {
			switch method {
			case "get", "put", "post", "delete", "options", "head", "patch", "trace":
				documented[strings.ToUpper(method)+" "+path] = true
			}
		}
	}
	var undocumented, unserved []string
	for route := range served {
		if !documented[route] {
			undocumented = append(undocumented, route)
		}
	}
	for route := range documented {
		if !served[route] {
			unserved = append(unserved, route)
		}
	}
	sort.Strings(undocumented)
	sort.Strings(unserved)
	var msg strings.Builder
	if len(undocumented) > 0 {
		fmt.Fprintf(&msg, "\n%d registered route(s) missing from api/openapi.json:\n", len(undocumented))
		for _, r := range undocumented {
			method, path, _ := strings.Cut(r, " ")
			fmt.Fprintf(&msg, "  %s\n    add under \"paths\": %s\n", r, skeleton(method, path))
		}
	}
	if len(unserved) > 0 {
		fmt.Fprintf(&msg, "\n%d operation(s) in api/openapi.json that no route serves (remove them, or register the route):\n", len(unserved))
		for _, r := range unserved {
			fmt.Fprintf(&msg, "  %s\n", r)
		}
	}
	if msg.Len() > 0 {
		t.Fatal(msg.String())
	}
}

// skeleton is a valid entry for a route, to paste and complete: its
// operation id, the security its path prefix usually takes, its path
// parameters, the Idempotency-Key of commands and the usual error answers.
func skeleton(method, path string) string {
	op := map[string]any{"operationId": operationID(method, path), "tags": []string{"TODO"}, "summary": "TODO"}
	var params []any
	for _, m := range regexp.MustCompile(`\{([^}]+)\}`).FindAllStringSubmatch(path, -1) {
		params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]string{"type": "string"}})
	}
	problem := func(d string) map[string]any {
		return map[string]any{"description": d, "content": map[string]any{"application/problem+json": map[string]any{"schema": map[string]string{"$ref": "#/components/schemas/Problem"}}}}
	}
	responses := map[string]any{"200": map[string]any{"description": "TODO", "content": map[string]any{"application/json": map[string]any{"schema": map[string]string{"type": "object"}}}},
		"500": map[string]string{"$ref": "#/components/responses/Internal"}}
	if method != "GET" {
		params = append(params, map[string]string{"$ref": "#/components/parameters/IdempotencyKey"})
		responses["400"] = map[string]string{"$ref": "#/components/responses/BadRequest"}
	}
	for prefix, sec := range map[string]struct{ scheme, unauthorized string }{
		"/v1/admin/":    {"adminToken", "#/components/responses/AdminTokenInvalid"},
		"/v1/audit/":    {"auditorKey", ""},
		"/v1/partner/":  {"partnerToken", "#/components/responses/InvalidToken"},
		"/v1/me":        {"session", "#/components/responses/InvalidSession"},
		"/v1/vehicles":  {"session", "#/components/responses/InvalidSession"},
		"/v1/sessions/": {"session", "#/components/responses/InvalidSession"},
	} {
		if strings.HasPrefix(path, prefix) {
			req := map[string][]string{sec.scheme: {}}
			if sec.scheme == "session" {
				req["deviceId"] = []string{}
			}
			op["security"] = []any{req}
			if sec.unauthorized != "" {
				responses["401"] = map[string]string{"$ref": sec.unauthorized}
			} else {
				responses["401"] = problem("TODO")
			}
		}
	}
	if len(params) > 0 {
		op["parameters"] = params
	}
	op["responses"] = responses
	b, _ := json.Marshal(map[string]any{path: map[string]any{strings.ToLower(method): op}})
	return string(b[1:len(b)-1]) + " (merge into the path's entry when it exists)"
}

// operationID is the method and path in camel case: postV1AdminClients.
func operationID(method, path string) string {
	id := strings.ToLower(method)
	for _, word := range regexp.MustCompile(`[A-Za-z0-9]+`).FindAllString(path, -1) {
		id += strings.ToUpper(word[:1]) + word[1:]
	}
	return id
}

// TestOpenAPIIsValid loads the document as OpenAPI 3.1 and validates it:
// structure, references, path parameters, examples and defaults.
func TestOpenAPIIsValid(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPIDocument())
	if err != nil {
		t.Fatalf("api/openapi.json does not load: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() || !strings.HasPrefix(doc.OpenAPI, "3.1.") {
		t.Fatalf("openapi = %q, want 3.1.x", doc.OpenAPI)
	}
	ctx := openapi3.WithValidationOptions(context.Background(), openapi3.EnableExamplesValidation(), openapi3.EnableSchemaDefaultsValidation())
	if err := doc.Validate(ctx); err != nil {
		t.Fatalf("api/openapi.json is not valid OpenAPI 3.1: %v", err)
	}
	ids := map[string]string{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			where := method + " " + path
			if op.OperationID == "" {
				t.Errorf("%s has no operationId", where)
			} else if other, dup := ids[op.OperationID]; dup {
				t.Errorf("%s and %s share operationId %q", where, other, op.OperationID)
			}
			ids[op.OperationID] = where
			if len(op.Tags) == 0 || op.Summary == "" {
				t.Errorf("%s needs a tag and a summary", where)
			}
			for code, r := range op.Responses.Map() {
				if strings.HasPrefix(code, "4") || strings.HasPrefix(code, "5") {
					if r.Value != nil && r.Value.Content != nil && r.Value.Content.Get("application/json") != nil && !strings.HasPrefix(path, "/oauth2/") && path != "/readyz" {
						t.Errorf("%s answers %s as application/json: REST errors are application/problem+json", where, code)
					}
				}
			}
		}
	}
	for _, name := range []string{"adminToken", "session", "deviceId", "clientBasic", "partnerToken", "auditorKey"} {
		if doc.Components.SecuritySchemes[name] == nil {
			t.Errorf("security scheme %q is missing", name)
		}
	}
}

// TestOpenAPIServed checks /openapi.json serves the embedded document and
// /docs renders every operation on one page that loads nothing else.
func TestOpenAPIServed(t *testing.T) {
	srv := httptest.NewServer(mountedServer(t).Handler())
	defer srv.Close()
	get := func(path string) (*http.Response, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get("/openapi.json")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || body != string(api.OpenAPIDocument()) {
		t.Fatalf("/openapi.json: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, page := get("/docs")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("/docs: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	_ = json.Unmarshal([]byte(body), &doc)
	for path, item := range doc.Paths {
		for method, op := range item {
			if !strings.Contains(page, `id="`+op.OperationID+`"`) || !strings.Contains(page, "<code>"+path+"</code>") {
				t.Errorf("/docs lacks %s %s (%s)", method, path, op.OperationID)
			}
		}
	}
	for _, external := range []string{"http://", "https://", "<script"} {
		if strings.Contains(strings.ReplaceAll(page, srv.URL, ""), external) {
			t.Errorf("/docs contains %q: the page must be self-contained", external)
		}
	}
}

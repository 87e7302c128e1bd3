package api

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/labstack/echo/v4"
)

// openAPIDocument is the OpenAPI 3.1 description of every route, kept by
// hand next to the handlers so that a change of the API is reviewed with
// its description. TestOpenAPIMatchesRoutes fails when a registered route is
// missing from it or it describes a route nobody registers.
//
//go:embed openapi.json
var openAPIDocument []byte

// OpenAPIDocument returns the embedded OpenAPI document.
func OpenAPIDocument() []byte { return bytes.Clone(openAPIDocument) }

// mountDocs serves the document at /openapi.json and a readable page
// rendered from it at /docs. The page is built once, at start: it is the
// same for every request and fetches nothing from elsewhere.
func (h *handlers) mountDocs() {
	page, err := renderDocsPage(openAPIDocument)
	if err != nil {
		panic(fmt.Sprintf("api: the embedded OpenAPI document cannot be rendered: %v", err))
	}
	e := h.server.Echo()
	e.GET("/openapi.json", func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderCacheControl, "public, max-age=300")
		return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, openAPIDocument)
	})
	e.GET("/docs", func(c echo.Context) error {
		hdr := c.Response().Header()
		hdr.Set(echo.HeaderCacheControl, "public, max-age=300")
		hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
		hdr.Set("X-Frame-Options", "DENY")
		return c.HTMLBlob(http.StatusOK, page)
	})
}

// oasDoc is the part of an OpenAPI document the page shows.
type oasDoc struct {
	Info struct {
		Title       string `json:"title"`
		Version     string `json:"version"`
		Description string `json:"description"`
	} `json:"info"`
	Tags       []struct{ Name string }            `json:"tags"`
	Paths      map[string]map[string]oasOperation `json:"paths"`
	Components struct {
		SecuritySchemes map[string]struct {
			Type        string `json:"type"`
			Scheme      string `json:"scheme"`
			In          string `json:"in"`
			Name        string `json:"name"`
			Description string `json:"description"`
		} `json:"securitySchemes"`
		Responses map[string]oasResponse     `json:"responses"`
		Schemas   map[string]json.RawMessage `json:"schemas"`
		Params    map[string]oasParameter    `json:"parameters"`
	} `json:"components"`
}

type oasOperation struct {
	OperationID string                 `json:"operationId"`
	Tags        []string               `json:"tags"`
	Summary     string                 `json:"summary"`
	Description string                 `json:"description"`
	Security    *[]map[string][]string `json:"security"`
	Parameters  []oasParameter         `json:"parameters"`
	RequestBody *struct {
		Content map[string]struct {
			Schema json.RawMessage `json:"schema"`
		} `json:"content"`
	} `json:"requestBody"`
	Responses map[string]oasResponse `json:"responses"`
}

type oasParameter struct {
	Ref         string          `json:"$ref"`
	Name        string          `json:"name"`
	In          string          `json:"in"`
	Required    bool            `json:"required"`
	Description string          `json:"description"`
	Schema      json.RawMessage `json:"schema"`
}

type oasResponse struct {
	Ref         string `json:"$ref"`
	Description string `json:"description"`
	Content     map[string]struct {
		Schema json.RawMessage `json:"schema"`
	} `json:"content"`
}

// The page's view of the document.
type (
	docsPage struct {
		Title, Version string
		Description    template.HTML
		Groups         []docsGroup
		Security       []docsNamed
		Schemas        []docsNamed
	}
	docsParam struct {
		Name, In    string
		Required    bool
		Schema      template.HTML
		Description template.HTML
	}
	docsGroup struct {
		Tag string
		Ops []docsOp
	}
	docsOp struct {
		Anchor, Method, Path, Security string
		Summary, Description           template.HTML
		Params                         []docsParam
		Body                           []docsNamed // media type → schema
		Responses                      []docsNamed // status → description and schema
	}
	docsNamed struct {
		Name   string
		Text   template.HTML
		Schema template.HTML
	}
)

var docsMethods = []string{"get", "post", "put", "patch", "delete"}

// renderDocsPage turns the document into one HTML page: operations grouped
// by tag, with their security, parameters, bodies and answers, then the
// security schemes and the schemas.
func renderDocsPage(raw []byte) ([]byte, error) {
	var d oasDoc
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, err
	}
	p := docsPage{Title: d.Info.Title, Version: d.Info.Version, Description: markdownCode(d.Info.Description)}
	byTag := map[string][]docsOp{}
	paths := make([]string, 0, len(d.Paths))
	for path := range d.Paths {
		paths = append(paths, path)
	}
	sort.Strings(paths)
	for _, path := range paths {
		for _, m := range docsMethods {
			o, ok := d.Paths[path][m]
			if !ok {
				continue
			}
			op := docsOp{Anchor: o.OperationID, Method: strings.ToUpper(m), Path: path, Summary: markdownCode(o.Summary), Description: markdownCode(o.Description),
				Security: securityText(o.Security)}
			for _, prm := range o.Parameters {
				if name, ok := strings.CutPrefix(prm.Ref, "#/components/parameters/"); ok {
					prm = d.Components.Params[name]
				}
				op.Params = append(op.Params, docsParam{Name: prm.Name, In: prm.In, Required: prm.Required,
					Schema: schemaHTML(prm.Schema), Description: markdownCode(prm.Description)})
			}
			if o.RequestBody != nil {
				for _, mt := range sortedKeys(o.RequestBody.Content) {
					op.Body = append(op.Body, docsNamed{Name: mt, Schema: schemaHTML(o.RequestBody.Content[mt].Schema)})
				}
			}
			for _, status := range sortedKeys(o.Responses) {
				r := o.Responses[status]
				if name, ok := strings.CutPrefix(r.Ref, "#/components/responses/"); ok {
					r = d.Components.Responses[name]
				}
				n := docsNamed{Name: status, Text: markdownCode(r.Description)}
				for _, mt := range sortedKeys(r.Content) {
					n.Schema += template.HTML(template.HTMLEscapeString(mt)+": ") + schemaHTML(r.Content[mt].Schema) + "\n"
				}
				op.Responses = append(op.Responses, n)
			}
			tag := "Other"
			if len(o.Tags) > 0 {
				tag = o.Tags[0]
			}
			byTag[tag] = append(byTag[tag], op)
		}
	}
	for _, t := range d.Tags {
		if ops := byTag[t.Name]; len(ops) > 0 {
			p.Groups = append(p.Groups, docsGroup{Tag: t.Name, Ops: ops})
			delete(byTag, t.Name)
		}
	}
	for _, tag := range sortedKeys(byTag) {
		p.Groups = append(p.Groups, docsGroup{Tag: tag, Ops: byTag[tag]})
	}
	for _, name := range sortedKeys(d.Components.SecuritySchemes) {
		s := d.Components.SecuritySchemes[name]
		how := s.Type
		switch {
		case s.Scheme != "":
			how += " " + s.Scheme
		case s.In != "":
			how += " in " + s.In + " " + s.Name
		}
		p.Security = append(p.Security, docsNamed{Name: name, Text: template.HTML(template.HTMLEscapeString(how)), Schema: markdownCode(s.Description)})
	}
	for _, name := range sortedKeys(d.Components.Schemas) {
		p.Schemas = append(p.Schemas, docsNamed{Name: name, Schema: schemaHTML(d.Components.Schemas[name])})
	}
	var buf bytes.Buffer
	if err := docsTemplate.Execute(&buf, p); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func securityText(sec *[]map[string][]string) string {
	if sec == nil {
		return ""
	}
	var alts []string
	for _, req := range *sec {
		if len(req) == 0 {
			alts = append(alts, "none")
			continue
		}
		var all []string
		for _, name := range sortedKeys(req) {
			if scopes := req[name]; len(scopes) > 0 {
				name += " (" + strings.Join(scopes, ", ") + ")"
			}
			all = append(all, name)
		}
		alts = append(alts, strings.Join(all, " + "))
	}
	if len(alts) == 0 {
		return "none"
	}
	return strings.Join(alts, " or ")
}

// markdownCode escapes s and shows its `code spans` as code: the only
// markup the document's descriptions use.
func markdownCode(s string) template.HTML {
	parts := strings.Split(s, "`")
	var b strings.Builder
	for i, part := range parts {
		part = template.HTMLEscapeString(part)
		if i%2 == 1 && i < len(parts)-1 {
			part = "<code>" + part + "</code>"
		}
		b.WriteString(part)
	}
	return template.HTML(b.String())
}

// schemaHTML writes a schema in a compact notation: objects as { field:
// type } with optional fields marked ?, arrays as [type], enumerations as
// "a" | "b", references as links to the schema below.
func schemaHTML(raw json.RawMessage) template.HTML {
	var v any
	if len(raw) == 0 || json.Unmarshal(raw, &v) != nil {
		return ""
	}
	var b strings.Builder
	writeSchema(&b, v, 0)
	return template.HTML(b.String())
}

func writeSchema(b *strings.Builder, v any, depth int) {
	esc := template.HTMLEscapeString
	m, ok := v.(map[string]any)
	if !ok {
		b.WriteString(esc(jsonText(v)))
		return
	}
	defer func() {
		if d, ok := m["description"].(string); ok && d != "" {
			b.WriteString(` <span class="muted">// ` + string(markdownCode(d)) + `</span>`)
		}
	}()
	if ref, ok := m["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/components/schemas/")
		fmt.Fprintf(b, `<a href="#schema-%s">%s</a>`, esc(name), esc(name))
		return
	}
	if c, ok := m["const"]; ok {
		b.WriteString(esc(quoted(c)))
		return
	}
	if values, ok := m["enum"].([]any); ok {
		for i, e := range values {
			if i > 0 {
				b.WriteString(" | ")
			}
			b.WriteString(esc(quoted(e)))
		}
		return
	}
	for _, k := range []string{"oneOf", "anyOf"} {
		if alts, ok := m[k].([]any); ok {
			for i, a := range alts {
				if i > 0 {
					b.WriteString("\n" + strings.Repeat("  ", depth) + "| ")
				}
				writeSchema(b, a, depth)
			}
			return
		}
	}
	var types []string
	switch t := m["type"].(type) {
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			types = append(types, jsonText(x))
		}
	}
	null := ""
	if slices.Contains(types, "null") {
		types = slices.DeleteFunc(types, func(t string) bool { return t == "null" })
		null = " | null"
	}
	if props, ok := m["properties"].(map[string]any); ok {
		required := map[string]bool{}
		if list, ok := m["required"].([]any); ok {
			for _, r := range list {
				required[jsonText(r)] = true
			}
		}
		b.WriteString("{\n")
		for _, k := range sortedKeys(props) {
			b.WriteString(strings.Repeat("  ", depth+1) + esc(k))
			if !required[k] {
				b.WriteString("?")
			}
			b.WriteString(": ")
			writeSchema(b, props[k], depth+1)
			b.WriteString("\n")
		}
		if extra, ok := m["additionalProperties"].(bool); ok && !extra {
			b.WriteString(strings.Repeat("  ", depth+1) + `<span class="muted">no other field</span>` + "\n")
		}
		b.WriteString(strings.Repeat("  ", depth) + "}" + null)
		return
	}
	if items, ok := m["items"]; ok {
		b.WriteString("[")
		writeSchema(b, items, depth)
		b.WriteString("]" + null)
		return
	}
	if extra, ok := m["additionalProperties"].(map[string]any); ok {
		b.WriteString("{ *: ")
		writeSchema(b, extra, depth)
		b.WriteString(" }" + null)
		return
	}
	if len(types) == 0 {
		types = []string{"any"}
	}
	b.WriteString(esc(strings.Join(types, " | ")))
	var notes []string
	for _, k := range []string{"format", "pattern", "minLength", "maxLength", "minimum"} {
		if x, ok := m[k]; ok {
			notes = append(notes, k+" "+jsonText(x))
		}
	}
	if len(notes) > 0 {
		b.WriteString(` <span class="muted">(` + esc(strings.Join(notes, ", ")) + `)</span>`)
	}
	b.WriteString(null)
}

func quoted(v any) string {
	out, _ := json.Marshal(v)
	return string(out)
}

func jsonText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	out, _ := json.Marshal(v)
	return string(out)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var docsTemplate = template.Must(template.New("docs").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1b1d21}
main{max-width:60rem;margin:0 auto;padding:1.5rem}
nav ul{columns:2;padding-left:1.2rem}
h2{margin-top:2.5rem;border-bottom:2px solid #d5d9e0}
section.op{background:#fff;border:1px solid #d5d9e0;border-radius:.5rem;padding:.6rem 1rem;margin:1rem 0}
.method{display:inline-block;min-width:4.2rem;font-weight:700;font-family:ui-monospace,monospace}
.GET{color:#1f6f3f}.POST{color:#1f4fd1}.DELETE{color:#c81e1e}.PUT,.PATCH{color:#8a5a00}
code,pre{font-family:ui-monospace,monospace;font-size:.85rem}
pre{background:#f0f2f5;padding:.5rem;overflow-x:auto;white-space:pre-wrap}
table{border-collapse:collapse}td,th{border:1px solid #d5d9e0;padding:.25rem .5rem;text-align:left;vertical-align:top}
.muted{color:#5b616b}
</style>
</head>
<body>
<main>
<h1>{{.Title}} API <span class="muted">version {{.Version}}</span></h1>
<p>{{.Description}}</p>
<p>The machine-readable document: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>
<nav><ul>{{range .Groups}}<li><a href="#tag-{{.Tag}}">{{.Tag}}</a></li>{{end}}<li><a href="#security">Security schemes</a></li><li><a href="#schemas">Schemas</a></li></ul></nav>
{{range .Groups}}
<h2 id="tag-{{.Tag}}">{{.Tag}}</h2>
{{range .Ops}}
<section class="op" id="{{.Anchor}}">
<h3><span class="method {{.Method}}">{{.Method}}</span> <code>{{.Path}}</code></h3>
<p><strong>{{.Summary}}</strong>{{if .Description}} — {{.Description}}{{end}}</p>
{{if .Security}}<p class="muted">Security: {{.Security}}</p>{{end}}
{{if .Params}}<table><tr><th>parameter</th><th>in</th><th>required</th><th>schema</th><th></th></tr>
{{range .Params}}<tr><td><code>{{.Name}}</code></td><td>{{.In}}</td><td>{{if .Required}}yes{{end}}</td><td><code>{{.Schema}}</code></td><td>{{.Description}}</td></tr>{{end}}
</table>{{end}}
{{range .Body}}<p>Request body ({{.Name}}):</p><pre>{{.Schema}}</pre>{{end}}
<table><tr><th>status</th><th>answer</th></tr>
{{range .Responses}}<tr><td>{{.Name}}</td><td>{{.Text}}{{if .Schema}}<pre>{{.Schema}}</pre>{{end}}</td></tr>{{end}}
</table>
</section>
{{end}}
{{end}}
<h2 id="security">Security schemes</h2>
<table>{{range .Security}}<tr><td><code>{{.Name}}</code></td><td>{{.Text}}</td><td>{{.Schema}}</td></tr>{{end}}</table>
<h2 id="schemas">Schemas</h2>
{{range .Schemas}}<h3 id="schema-{{.Name}}">{{.Name}}</h3><pre>{{.Schema}}</pre>{{end}}
</main>
</body>
</html>
`))

package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/consentledger/ledger/migrations/dbtest"
)

// series is one sample of a scrape: its name, labels and value.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

var (
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)`)
	labelPair  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// scrape reads /metrics in the text exposition format.
func scrape(t *testing.T, base string) []series {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []series
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := sampleLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		s := series{name: m[1], labels: map[string]string{}, value: v}
		for _, l := range labelPair.FindAllStringSubmatch(m[2], -1) {
			s.labels[l[1]] = l[2]
		}
		out = append(out, s)
	}
	return out
}

// sum adds the samples of name whose labels include want.
func sum(all []series, name string, want map[string]string) float64 {
	var total float64
next:
	for _, s := range all {
		if s.name != name {
			continue
		}
		for k, v := range want {
			if s.labels[k] != v {
				continue next
			}
		}
		total += s.value
	}
	return total
}

// TestServeMetricsMove drives a real `ledger serve` and reads /metrics
// before and after: HTTP latency per route template, command outcomes by
// type and kind (also for SDK calls that answer HTTP 200 FAILED), events
// appended by type and appends by outcome all move by what was done.
func TestServeMetricsMove(t *testing.T) {
	p := startServe(t, buildLedger(t), dbtest.URL(t), freeAddr(t))
	call := func(method, path, body string, header ...string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, p.url+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var out map[string]any
		_ = json.Unmarshal(raw, &out)
		return resp.StatusCode, out
	}
	before := scrape(t, p.url)

	signUp := `{"email":"metrics@example.com","password":"Correct-Horse-9"}`
	if status, _ := call("POST", "/v1/accounts", signUp); status != 201 {
		t.Fatalf("sign-up: HTTP %d", status)
	}
	if status, _ := call("POST", "/v1/accounts", signUp); status != 409 {
		t.Fatalf("second sign-up: HTTP %d", status)
	}
	if status, _ := call("POST", "/v1/accounts", `{"email":`); status != 400 {
		t.Fatalf("malformed sign-up: HTTP %d", status)
	}
	_, outbox := call("GET", "/v1/dev/outbox?to=metrics@example.com", "")
	link, _ := url.Parse(outbox["messages"].([]any)[0].(map[string]any)["link"].(string))
	if status, _ := call("POST", "/v1/accounts/activate", `{"token":"`+link.Query().Get("token")+`"}`); status != 200 {
		t.Fatalf("activate: HTTP %d", status)
	}
	_, session := call("POST", "/v1/sessions", `{"email":"metrics@example.com","password":"Correct-Horse-9","deviceId":"phone-1"}`)
	auth := []string{"Authorization", "Bearer " + session["sessionToken"].(string), "X-Device-Id", "phone-1"}
	status, answer := call("POST", "/pims/set", `{"api":"pims.authentication.enrollment","parameters":{"action":"enroll","pinCode":"1234"}}`, auth...)
	if status != 200 || answer["status"] != "FAILED" {
		t.Fatalf("enroll without an SMS code: HTTP %d %v", status, answer)
	}

	after := scrape(t, p.url)
	delta := func(name string, labels map[string]string) float64 {
		return sum(after, name, labels) - sum(before, name, labels)
	}
	outcome := func(command, outcome string) float64 {
		return delta("ledger_command_outcomes_total", map[string]string{"command": command, "outcome": outcome})
	}
	for _, c := range []struct {
		command, outcome string
		want             float64
	}{
		{"POST /v1/accounts", "ok", 1},
		{"POST /v1/accounts", "conflict", 1},
		{"POST /v1/accounts", "invalid", 1},
		{"POST /v1/accounts/activate", "ok", 1},
		{"POST /v1/sessions", "ok", 1},
	} {
		if got := outcome(c.command, c.outcome); got != c.want {
			t.Errorf("command %q outcome %q moved by %v, want %v", c.command, c.outcome, got, c.want)
		}
	}
	sdk := delta("ledger_command_outcomes_total", map[string]string{"command": "/pims/set pims.authentication.enrollment"})
	if ok := outcome("/pims/set pims.authentication.enrollment", "ok"); sdk != 1 || ok != 0 {
		t.Errorf("the FAILED SDK call: %v outcomes, %v of them ok; want 1 and 0", sdk, ok)
	}
	if n := delta("ledger_http_request_duration_seconds_count", map[string]string{"method": "POST", "route": "/v1/accounts", "status": "201"}); n != 1 {
		t.Errorf("latency observations of POST /v1/accounts 201: %v, want 1", n)
	}
	if n := delta("ledger_events_appended_total", map[string]string{"adapter": "postgres", "type": "account.registered.v1"}); n != 1 {
		t.Errorf("account.registered.v1 events appended: %v, want 1", n)
	}
	if n := delta("ledger_eventstore_appends_total", map[string]string{"adapter": "postgres", "outcome": "ok"}); n < 4 {
		t.Errorf("acknowledged appends: %v, want at least 4", n)
	}
	if n := delta("ledger_eventstore_append_duration_seconds_count", map[string]string{"adapter": "postgres"}); n < 4 {
		t.Errorf("append latency observations: %v, want at least 4", n)
	}

	dashboardUsesServedMetrics(t, after)
}

// projectionGauges are the projection status gauges the dashboard plots,
// registered by the projection status work; until they are served the
// dashboard's projection panels stay empty rather than failing this test.
// The rebuild progress ratio is served only while a rebuild runs.
var projectionGauges = map[string]bool{"ledger_projection_lag_events": true, "ledger_projection_lag_seconds": true,
	"ledger_projection_events_per_second": true, "ledger_projection_state": true}

const rebuildProgress = "ledger_projection_rebuild_progress_ratio"

// dashboardUsesServedMetrics checks that every series the sample Grafana
// dashboard queries is one the server exposes, and that the JSON is a
// dashboard at all.
func dashboardUsesServedMetrics(t *testing.T, scraped []series) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil || dash.Title == "" || len(dash.Panels) == 0 {
		t.Fatalf("docs/grafana-dashboard.json is not a dashboard: %v", err)
	}
	served := map[string]bool{}
	for _, s := range scraped {
		served[s.name] = true
	}
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			for _, name := range regexp.MustCompile(`ledger_[a-z_]+`).FindAllString(target.Expr, -1) {
				if !served[name] && name != rebuildProgress && !(projectionGauges[name] && !servedAny(served, projectionGauges)) {
					t.Errorf("dashboard panel %q queries %s, which /metrics does not serve", p.Title, name)
				}
			}
		}
	}
}

// servedAny reports whether any of names is served.
func servedAny(served, names map[string]bool) bool {
	for n := range names {
		if served[n] {
			return true
		}
	}
	return false
}

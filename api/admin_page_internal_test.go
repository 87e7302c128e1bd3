package api

import (
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestAdminRowShowsStatusFields lays out a projection status with every
// field the admin API gives (lag, throughput, instance, a running rebuild)
// and one it does not know yet.
func TestAdminRowShowsStatusFields(t *testing.T) {
	var p map[string]any
	if err := json.Unmarshal([]byte(`{"name":"accounts","state":"rebuilding","runningOn":"host-1:42",
		"position":{"commit":7,"prepare":9},"head":{"commit":8,"prepare":12},"lagEvents":3,"lagMs":1500,
		"eventsApplied":9,"eventsPerSecond":12.345,"lastEventAt":"2026-11-23T19:00:00Z","updatedAt":"2026-11-23T19:00:01Z",
		"rebuild":{"running":true,"phase":"building","percent":42.4,"etaSeconds":75},"shard":"b"}`), &p); err != nil {
		t.Fatal(err)
	}
	want := adminProjectionRow{Name: "accounts", State: "rebuilding", RunningOn: "host-1:42", Position: "7/9", Head: "8/12",
		Applied: "9", LastEventAt: "2026-11-23 19:00:00Z", Lag: "3 events, 1.5s", Rate: "12.3", Rebuild: "building 42%, ETA 1m15s",
		Extra: []adminField{{Name: "shard", Value: "b"}}}
	if got := adminRow(p); !reflect.DeepEqual(got, want) {
		t.Fatalf("row\n got %+v\nwant %+v", got, want)
	}

	// Fewer fields: nothing made up.
	p = nil
	_ = json.Unmarshal([]byte(`{"name":"steps","state":"stopped","position":{"commit":1,"prepare":1},"head":{"commit":2,"prepare":2},
		"eventsApplied":1,"error":{"message":"boom","eventType":"x.v1","position":2},"lagEvents":5,"lagCapped":true}`), &p)
	r := adminRow(p)
	if r.Lag != "≥ 5 events" || r.Rate != "" || r.Rebuild != "" || r.Error != "boom (event x.v1 at position 2)" || len(r.Extra) != 0 {
		t.Fatalf("row %+v", r)
	}
}

// TestAdminPageWithoutAdminToken: with no admin token configured nobody
// signs in, not even with an empty token or a cookie made under the empty
// token's key.
func TestAdminPageWithoutAdminToken(t *testing.T) {
	env := newEnv(t)
	h := &handlers{server: env.srv}
	h.mountAdminPage()
	for _, token := range []string{"", "anything-0123456789"} {
		rec := env.do(t, request{method: "POST", target: "/admin/login", body: strings.NewReader(url.Values{"token": {token}}.Encode()),
			header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}})
		if rec.Code != 401 || rec.Header().Get("Set-Cookie") != "" {
			t.Fatalf("sign-in with %q: HTTP %d, Set-Cookie %q", token, rec.Code, rec.Header().Get("Set-Cookie"))
		}
	}
	forged := h.newAdminSession(time.Now())
	rec := env.do(t, request{method: "GET", target: "/admin", header: map[string]string{"Cookie": adminCookie + "=" + forged}})
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `name="token"`) || strings.Contains(rec.Body.String(), "csrf") {
		t.Fatalf("a cookie under the empty token's key: HTTP %d\n%s", rec.Code, rec.Body)
	}
}

package api

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

func TestFailureLimiterTripsOnceAndRefills(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newFailureLimiter(3, 30*time.Second, func() time.Time { return now })
	for i := 1; i <= 2; i++ {
		if tripped, n, _ := l.fail("a"); tripped || n != i {
			t.Fatalf("failure %d tripped=%v count=%d", i, tripped, n)
		}
	}
	if _, limited := l.blocked("a"); limited {
		t.Fatal("limited before the budget is spent")
	}
	tripped, n, until := l.fail("a")
	if !tripped || n != 3 || !until.Equal(now.Add(30*time.Second)) {
		t.Fatalf("third failure: tripped=%v count=%d until=%v", tripped, n, until)
	}
	if tripped, _, _ := l.fail("a"); tripped {
		t.Fatal("a limited key tripped again")
	}
	if wait, limited := l.blocked("a"); !limited || wait <= 0 {
		t.Fatalf("not limited after the budget: %v %v", wait, limited)
	}
	if _, limited := l.blocked("b"); limited {
		t.Fatal("another key is limited")
	}
	// Half the window gives half the budget back, but a limited key waits
	// for all of it.
	now = now.Add(15 * time.Second)
	if _, limited := l.blocked("a"); !limited {
		t.Fatal("limited key served before its budget is whole")
	}
	now = now.Add(time.Minute)
	if _, limited := l.blocked("a"); limited {
		t.Fatal("still limited after the window")
	}
	if tripped, n, _ := l.fail("a"); tripped || n != 1 {
		t.Fatalf("after the window: tripped=%v count=%d", tripped, n)
	}
	// Whole buckets are forgotten by the sweep; "a" is not whole yet.
	now = now.Add(2 * time.Second)
	l.fail("b")
	now = now.Add(time.Hour)
	l.fail("c")
	if _, ok := l.buckets["a"]; ok {
		t.Fatal("a whole bucket was kept")
	}
	if len(l.buckets) != 1 {
		t.Fatalf("%d buckets after the sweep, want 1", len(l.buckets))
	}
	var off *failureLimiter
	if tripped, _, _ := off.fail("a"); tripped {
		t.Fatal("a disabled limiter tripped")
	}
}

func TestSourceAddress(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"203.0.113.7", "203.0.113.7"},
		{"::ffff:203.0.113.7", "203.0.113.7"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"},
	} {
		if got := sourceKey(tc.in); got != tc.want {
			t.Errorf("sourceKey(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}

	trusted, err := ParseTrustedProxies(" 10.0.0.0/8, 192.0.2.1 ")
	if err != nil || len(trusted) != 2 {
		t.Fatalf("ParseTrustedProxies: %v %v", trusted, err)
	}
	if _, err := ParseTrustedProxies("10.0.0.0/8,proxy.example"); err == nil {
		t.Fatal("a host name was accepted as a proxy")
	}
	ip := func(extract echo.IPExtractor, peer, xff string) string {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = peer + ":1234"
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		r.Header.Set("X-Real-Ip", "6.6.6.6")
		return extract(r)
	}
	direct := ipExtractor(nil)
	if got := ip(direct, "10.1.1.1", "203.0.113.7"); got != "10.1.1.1" {
		t.Errorf("without trusted proxies the header was believed: %s", got)
	}
	viaProxy := ipExtractor(trusted)
	if got := ip(viaProxy, "10.1.1.1", "203.0.113.7"); got != "203.0.113.7" {
		t.Errorf("through a trusted proxy: %s, want 203.0.113.7", got)
	}
	if got := ip(viaProxy, "10.1.1.1", "198.51.100.1, 203.0.113.7, 10.2.2.2"); got != "203.0.113.7" {
		t.Errorf("through two trusted proxies: %s, want the nearest untrusted 203.0.113.7", got)
	}
	if got := ip(viaProxy, "198.51.100.5", "203.0.113.7"); got != "198.51.100.5" {
		t.Errorf("an untrusted peer's header was believed: %s", got)
	}
	if got := ip(viaProxy, "172.16.0.1", "203.0.113.7"); got != "172.16.0.1" {
		t.Errorf("a private peer not configured as a proxy was believed: %s", got)
	}
}

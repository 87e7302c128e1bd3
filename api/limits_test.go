package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/migrations/dbtest"
)

func TestFailureLimiterTripsOnceAndRefills(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newFailureLimiter(3, 30*time.Second, func() time.Time { return now })
	for i := 1; i <= 2; i++ {
		if tripped, n, _ := l.fail(ctx, "a"); tripped || n != i {
			t.Fatalf("failure %d tripped=%v count=%d", i, tripped, n)
		}
	}
	if _, limited := l.blocked(ctx, "a"); limited {
		t.Fatal("limited before the budget is spent")
	}
	tripped, n, until := l.fail(ctx, "a")
	if !tripped || n != 3 || !until.Equal(now.Add(30*time.Second)) {
		t.Fatalf("third failure: tripped=%v count=%d until=%v", tripped, n, until)
	}
	if tripped, _, _ := l.fail(ctx, "a"); tripped {
		t.Fatal("a limited key tripped again")
	}
	if wait, limited := l.blocked(ctx, "a"); !limited || wait <= 0 {
		t.Fatalf("not limited after the budget: %v %v", wait, limited)
	}
	if _, limited := l.blocked(ctx, "b"); limited {
		t.Fatal("another key is limited")
	}
	// Half the window gives half the budget back, but a limited key waits
	// for all of it.
	now = now.Add(15 * time.Second)
	if _, limited := l.blocked(ctx, "a"); !limited {
		t.Fatal("limited key served before its budget is whole")
	}
	now = now.Add(time.Minute)
	if _, limited := l.blocked(ctx, "a"); limited {
		t.Fatal("still limited after the window")
	}
	if tripped, n, _ := l.fail(ctx, "a"); tripped || n != 1 {
		t.Fatalf("after the window: tripped=%v count=%d", tripped, n)
	}
	// Whole buckets are forgotten by the sweep; "a" is not whole yet.
	now = now.Add(2 * time.Second)
	l.fail(ctx, "b")
	now = now.Add(time.Hour)
	l.fail(ctx, "c")
	if _, ok := l.buckets["a"]; ok {
		t.Fatal("a whole bucket was kept")
	}
	if len(l.buckets) != 1 {
		t.Fatalf("%d buckets after the sweep, want 1", len(l.buckets))
	}
	var off *failureLimiter
	if tripped, _, _ := off.fail(ctx, "a"); tripped {
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

// TestSharedFailureBudgetAcrossInstances: two instances on one database
// draw from one budget per source. Failures sent to both at once are all
// counted, exactly one of them trips the limit (one event, not one per
// instance), and the instance that did not trip it refuses the source too
// once it reads the shared limits.
func TestSharedFailureBudgetAcrossInstances(t *testing.T) {
	ctx := context.Background()
	db := dbtest.Pool(t)
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	instance := func() *failureLimiter {
		return newFailureLimiter(10, time.Minute, clock).shared(db, "source", time.Nanosecond, slog.Default())
	}
	a, b := instance(), instance()

	var trips atomic.Int32
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := a
			if i%2 == 1 {
				l = b
			}
			if tripped, _, _ := l.fail(ctx, "203.0.113.9"); tripped {
				trips.Add(1)
			}
		}()
	}
	wg.Wait()
	if trips.Load() != 1 {
		t.Fatalf("%d instances tripped the limit, want exactly 1", trips.Load())
	}
	for name, l := range map[string]*failureLimiter{"a": a, "b": b} {
		if wait, limited := l.blocked(ctx, "203.0.113.9"); !limited || wait <= 0 || wait > time.Minute {
			t.Errorf("instance %s: limited=%v for %v", name, limited, wait)
		}
		if _, limited := l.blocked(ctx, "198.51.100.1"); limited {
			t.Errorf("instance %s limits another source", name)
		}
	}
	// A third instance started later learns the limit from the database.
	if _, limited := instance().blocked(ctx, "203.0.113.9"); !limited {
		t.Error("a new instance does not know the limit")
	}
	// A window later the budget is whole again, everywhere; the row is
	// swept once it has refilled.
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if _, limited := a.blocked(ctx, "203.0.113.9"); limited {
		t.Error("still limited after the window")
	}
	if tripped, n, _ := b.fail(ctx, "203.0.113.9"); tripped || n != 1 {
		t.Errorf("after the window: tripped=%v failures=%d", tripped, n)
	}
	mu.Lock()
	now = now.Add(5 * time.Minute)
	mu.Unlock()
	a.fail(ctx, "198.51.100.2")
	var rows int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM failure_limits WHERE key = '203.0.113.9'`).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("refilled row kept: %d %v", rows, err)
	}
}

// BenchmarkFailureLimiterBlocked is the cost the source limit adds to every
// request: the check of an address that is not limited, among 10 000
// addresses that failed recently (memory; the shared view refreshed at most
// every 2 seconds costs one query per interval, not per request).
func BenchmarkFailureLimiterBlocked(b *testing.B) {
	ctx := context.Background()
	l := newFailureLimiter(100, 15*time.Minute, nil)
	for i := range 10000 {
		l.fail(ctx, fmt.Sprintf("198.51.%d.%d", i/256, i%256))
	}
	b.ResetTimer()
	for b.Loop() {
		l.blocked(ctx, "203.0.113.7")
	}
}

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/consentledger/ledger/migrations/dbtest"
)

// TestSoak runs a steady mixed load against a real `ledger serve` for
// SOAK_DURATION (skipped when unset; `make soak` sets it, default 10m) at
// SOAK_RATE operations per second (default 10): sign-ups (with activation,
// sign-in, a car and a service), SDK enrollments, steps reads, OAuth
// client-credentials grants, introspections and revocations. It reports
// each call's count, errors and latency (p50, p99, max), and the server's
// heap and resident memory at the start and the end, and fails on any error
// or on memory growth beyond noise (half as much again plus 32 MiB of heap,
// 64 MiB of RSS).
func TestSoak(t *testing.T) {
	raw := os.Getenv("SOAK_DURATION")
	if raw == "" {
		t.Skip("SOAK_DURATION is unset: `make soak` runs this (SOAK_DURATION=30s for a short run)")
	}
	duration, err := time.ParseDuration(raw)
	if err != nil {
		t.Fatalf("SOAK_DURATION: %v", err)
	}
	rate := 10.0
	if r := os.Getenv("SOAK_RATE"); r != "" {
		if rate, err = strconv.ParseFloat(r, 64); err != nil || rate <= 0 {
			t.Fatalf("SOAK_RATE must be a positive number: %q", r)
		}
	}
	bin := buildLedger(t)
	// Growth is read from the heap in use, which a heap floor would fill
	// with garbage up to the floor at this rate: collect at GOGC's pace.
	t.Setenv("LEDGER_GC_HEAP_FLOOR", "0")
	p := startServe(t, bin, dbtest.URL(t), freeAddr(t))
	s := newSoak(t, p)

	s.warmUp(4)
	mix := []struct {
		weight int
		op     func()
	}{{1, s.signUp}, {1, s.enroll}, {3, s.readSteps}, {2, s.grant}, {4, s.introspect}, {1, s.revoke}}
	var wheel []func()
	for _, m := range mix {
		for range m.weight {
			wheel = append(wheel, m.op)
		}
	}
	// Memory is sampled under the load, at the start (after a warm-up)
	// and at the end, so that both samples see the same work in flight
	// (argon2id alone holds 64 MiB per password being hashed).
	began := time.Now()
	end := began.Add(duration)
	var late atomic.Int64
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
		sem := make(chan struct{}, 64)
		var wg sync.WaitGroup
		for i := 0; time.Now().Before(end); i++ {
			<-tick.C
			select {
			case sem <- struct{}{}:
			default:
				late.Add(1) // 64 operations in flight: the server does not keep up
				continue
			}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				wheel[i%len(wheel)]()
			}()
		}
		wg.Wait()
	}()
	time.Sleep(max(min(duration/10, 30*time.Second), 10*time.Second))
	startMem := s.memory()
	time.Sleep(time.Until(end.Add(-6 * time.Second)))
	endMem := s.memory()
	<-loaded

	report := s.report(duration, rate, startMem, endMem, late.Load())
	t.Log("\n" + report)
	fmt.Println(report)
	if s.errorCount() > 0 {
		t.Errorf("%d errors: %s", s.errorCount(), strings.Join(s.errorSamples(), "; "))
	}
	if late.Load() > 0 {
		t.Errorf("%d operations could not start on time (64 in flight)", late.Load())
	}
	if endMem.heap > startMem.heap*3/2+32<<20 {
		t.Errorf("heap grew from %d MiB to %d MiB", startMem.heap>>20, endMem.heap>>20)
	}
	if endMem.rss > startMem.rss*3/2+64<<20 {
		t.Errorf("RSS grew from %d MiB to %d MiB", startMem.rss>>20, endMem.rss>>20)
	}
}

type soakUser struct {
	email, device, session, vin, carAssociation, phone string
}

type soak struct {
	t      *testing.T
	url    string
	admin  string
	client *http.Client
	seq    atomic.Int64

	clientID, clientSecret string

	mu         sync.Mutex
	latencies  map[string][]time.Duration
	errors     map[string]int
	samples    []string
	users      []*soakUser // signed in, with a car: steps reads
	unenrolled []*soakUser
	tokens     []string
}

var adminTokenLine = regexp.MustCompile(`dev admin token[^:]*: (\S+)`)

func newSoak(t *testing.T, p *process) *soak {
	m := adminTokenLine.FindStringSubmatch(p.stdout.String())
	if m == nil {
		t.Fatalf("no dev admin token in the server's output:\n%s", p.stdout)
	}
	s := &soak{t: t, url: p.url, admin: m[1], client: &http.Client{Timeout: 30 * time.Second},
		latencies: map[string][]time.Duration{}, errors: map[string]int{}}
	var out struct {
		ClientID     string `json:"clientId"`
		ClientSecret string `json:"clientSecret"`
	}
	if !s.call("register client", "POST", "/v1/admin/clients", `{"name":"soak","grantTypes":["client_credentials"],"scopes":[]}`,
		201, &out, "Authorization", "Bearer "+s.admin) {
		t.Fatalf("registering the soak's client failed: %v", s.errorSamples())
	}
	s.clientID, s.clientSecret = out.ClientID, out.ClientSecret
	return s
}

// warmUp signs up n users and gets n tokens, so that every operation of
// the mix has something to work on from the start.
func (s *soak) warmUp(n int) {
	for range n {
		s.signUp()
		s.grant()
	}
	if s.errorCount() > 0 {
		s.t.Fatalf("warm-up failed: %v", s.errorSamples())
	}
}

// call sends one request, records its latency under name and counts it as
// an error unless it answers want; out receives the decoded body.
func (s *soak) call(name, method, path, body string, want int, out any, header ...string) bool {
	req, _ := http.NewRequest(method, s.url+path, strings.NewReader(body))
	switch {
	case strings.HasPrefix(body, "{"):
		req.Header.Set("Content-Type", "application/json")
	case body != "":
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	began := time.Now()
	resp, err := s.client.Do(req)
	var raw []byte
	if err == nil {
		raw, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	took := time.Since(began)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latencies[name] = append(s.latencies[name], took)
	switch {
	case err != nil:
		s.fail(name, err.Error())
		return false
	case resp.StatusCode != want:
		s.fail(name, fmt.Sprintf("HTTP %d: %.200s", resp.StatusCode, raw))
		return false
	}
	if out != nil {
		_ = json.Unmarshal(raw, out)
	}
	return true
}

func (s *soak) fail(name, what string) {
	s.errors[name]++
	if len(s.samples) < 5 {
		s.samples = append(s.samples, name+": "+what)
	}
}

// sdk calls the SDK gateway and wants a SUCCEEDED envelope.
func (s *soak) sdk(name string, u *soakUser, path, api string, params map[string]any) bool {
	body, _ := json.Marshal(map[string]any{"api": api, "parameters": params})
	var out struct {
		Status string          `json:"status"`
		Error  json.RawMessage `json:"error"`
	}
	if !s.call(name, "POST", path, string(body), 200, &out, "Authorization", "Bearer "+u.session, "X-Device-Id", u.device) {
		return false
	}
	if out.Status != "SUCCEEDED" {
		s.mu.Lock()
		s.fail(name, "FAILED "+string(out.Error))
		s.mu.Unlock()
		return false
	}
	return true
}

// lastCode reads the newest code sent to to from the dev outbox.
func (s *soak) lastCode(to string) string {
	var out struct {
		Messages []struct {
			Code string `json:"code"`
		} `json:"messages"`
	}
	if !s.call("dev outbox", "GET", "/v1/dev/outbox?to="+url.QueryEscape(to), "", 200, &out) || len(out.Messages) == 0 {
		return ""
	}
	return out.Messages[0].Code
}

const vinAlphabet = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"

// signUp onboards a user: sign-up, activation, sign-in, a car and its
// vehicleStatus service.
func (s *soak) signUp() {
	n := s.seq.Add(1)
	u := &soakUser{email: fmt.Sprintf("soak-%d@example.com", n), device: fmt.Sprintf("device-%d", n), phone: fmt.Sprintf("06%08d", n)}
	vin := []byte("SXAK0000000000000")
	for i := 4; i < len(vin); i++ {
		vin[i] = vinAlphabet[rand.IntN(len(vinAlphabet))]
	}
	u.vin = string(vin)
	body := fmt.Sprintf(`{"email":%q,"password":"Correct-Horse-9"}`, u.email)
	if !s.call("sign-up", "POST", "/v1/accounts", body, 201, nil) {
		return
	}
	if !s.call("activate", "POST", "/v1/accounts/activate", fmt.Sprintf(`{"token":%q}`, s.lastCode(u.email)), 200, nil) {
		return
	}
	var sess struct {
		SessionToken string `json:"sessionToken"`
	}
	if !s.call("sign-in", "POST", "/v1/sessions", fmt.Sprintf(`{"email":%q,"password":"Correct-Horse-9","deviceId":%q}`, u.email, u.device), 201, &sess) {
		return
	}
	u.session = sess.SessionToken
	auth := []string{"Authorization", "Bearer " + u.session, "X-Device-Id", u.device}
	if !s.call("add vehicle", "POST", "/v1/vehicles", fmt.Sprintf(`{"vin":%q}`, u.vin), 201, nil, auth...) {
		return
	}
	var svc struct {
		CarAssociationID string `json:"carAssociationID"`
	}
	if !s.call("subscribe service", "POST", "/v1/vehicles/"+u.vin+"/services", `{"service":"vehicleStatus"}`, 201, &svc, auth...) {
		return
	}
	u.carAssociation = svc.CarAssociationID
	s.mu.Lock()
	s.users = append(s.users, u)
	s.unenrolled = append(s.unenrolled, u)
	s.mu.Unlock()
}

// enroll runs the SDK's shortcut enrollment for a user who has none yet
// (onboarding one first when every user is enrolled).
func (s *soak) enroll() {
	s.mu.Lock()
	var u *soakUser
	if n := len(s.unenrolled); n > 0 {
		u, s.unenrolled = s.unenrolled[n-1], s.unenrolled[:n-1]
	}
	s.mu.Unlock()
	if u == nil {
		s.signUp()
		return
	}
	if !s.sdk("sms code", u, "/pims/get", "pims.authentication.smscode", map[string]any{"type": "phoneNumberCertification", "phoneNumber": u.phone}) {
		return
	}
	s.sdk("enroll", u, "/pims/set", "pims.authentication.enrollment",
		map[string]any{"action": "enrollWithPhoneNumber", "pinCode": "1234", "smsCode": s.lastCode(u.phone), "phoneNumber": u.phone})
}

func (s *soak) readSteps() {
	s.mu.Lock()
	u := s.users[rand.IntN(len(s.users))]
	s.mu.Unlock()
	s.sdk("steps", u, "/pims/get", "pims.subscription.steps", map[string]any{"carAssociationID": u.carAssociation})
}

func (s *soak) basic() []string {
	return []string{"Authorization", "Basic " + basicAuth(s.clientID, s.clientSecret)}
}

// grant gets a client-credentials access token.
func (s *soak) grant() {
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if s.call("token grant", "POST", "/oauth2/token", "grant_type=client_credentials", 200, &out, s.basic()...) {
		s.mu.Lock()
		s.tokens = append(s.tokens, out.AccessToken)
		s.mu.Unlock()
	}
}

func (s *soak) introspect() {
	s.mu.Lock()
	token := s.tokens[rand.IntN(len(s.tokens))]
	s.mu.Unlock()
	s.call("introspect", "POST", "/oauth2/introspect", "token="+url.QueryEscape(token), 200, nil, s.basic()...)
}

// revoke revokes the oldest token but one, so there is always a token.
func (s *soak) revoke() {
	s.mu.Lock()
	if len(s.tokens) < 2 {
		s.mu.Unlock()
		return
	}
	token := s.tokens[0]
	s.tokens = s.tokens[1:]
	s.mu.Unlock()
	s.call("revoke", "POST", "/oauth2/revoke", "token="+url.QueryEscape(token), 200, nil, s.basic()...)
}

func basicAuth(id, secret string) string {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

type soakMemory struct{ heap, rss int64 }

// memory reads the server's heap in use and RSS from /metrics: the least
// of five samples a second apart, so that a collection about to happen
// does not pass for growth.
func (s *soak) memory() soakMemory {
	m := soakMemory{heap: -1, rss: -1}
	for i := range 5 {
		if i > 0 {
			time.Sleep(time.Second)
		}
		resp, err := s.client.Get(s.url + "/metrics")
		if err != nil {
			s.t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			name, value, _ := strings.Cut(sc.Text(), " ")
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				continue
			}
			switch name {
			case "go_memstats_heap_inuse_bytes":
				if m.heap < 0 || int64(v) < m.heap {
					m.heap = int64(v)
				}
			case "process_resident_memory_bytes":
				if m.rss < 0 || int64(v) < m.rss {
					m.rss = int64(v)
				}
			}
		}
		resp.Body.Close()
	}
	if m.heap < 0 || m.rss < 0 {
		s.t.Fatal("/metrics lacks go_memstats_heap_inuse_bytes or process_resident_memory_bytes")
	}
	return m
}

func (s *soak) errorCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.errors {
		n += e
	}
	return n
}

func (s *soak) errorSamples() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.samples)
}

func (s *soak) report(d time.Duration, rate float64, start, end soakMemory, late int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "soak: %s at %.0f operations/s (after warm-up)\n", d, rate)
	fmt.Fprintf(&b, "%-18s %7s %6s %9s %9s %9s\n", "call", "count", "errors", "p50", "p99", "max")
	names := make([]string, 0, len(s.latencies))
	for n := range s.latencies {
		names = append(names, n)
	}
	slices.Sort(names)
	var all []time.Duration
	total, errs := 0, 0
	for _, n := range names {
		l := slices.Clone(s.latencies[n])
		slices.Sort(l)
		all = append(all, l...)
		total += len(l)
		errs += s.errors[n]
		fmt.Fprintf(&b, "%-18s %7d %6d %9s %9s %9s\n", n, len(l), s.errors[n], pct(l, 50), pct(l, 99), l[len(l)-1].Round(time.Microsecond))
	}
	slices.Sort(all)
	fmt.Fprintf(&b, "%-18s %7d %6d %9s %9s %9s\n", "all", total, errs, pct(all, 50), pct(all, 99), all[len(all)-1].Round(time.Microsecond))
	fmt.Fprintf(&b, "error rate %.4f%%, late starts %d\n", 100*float64(errs)/float64(max(total, 1)), late)
	fmt.Fprintf(&b, "heap in use %d MiB → %d MiB, RSS %d MiB → %d MiB\n", start.heap>>20, end.heap>>20, start.rss>>20, end.rss>>20)
	return b.String()
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)].Round(time.Microsecond)
}

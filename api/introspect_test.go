package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/consent"
)

// nullWriter is a ResponseWriter that keeps the status and forgets the
// body, so that a benchmark counts the server's work, not a recorder's.
type nullWriter struct {
	header http.Header
	status int
	body   int
}

func (w *nullWriter) Header() http.Header { return w.header }
func (w *nullWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}
func (w *nullWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body += len(p)
	return len(p), nil
}

// BenchmarkIntrospect introspects a client-credentials token, what the
// introspection bench row sends. "handler": the server's side alone, the
// network left out (time and allocations per request). "http": 64 clients
// over loopback in this process, as the bench row runs; cpu-µs/op is the
// process's CPU time (user and system, client and server) per request,
// which says what two cores allow better than a rate taken on a busy
// machine.
func BenchmarkIntrospect(b *testing.B) {
	l := newOAuthLedger(b, nil)
	rs := l.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}, Scopes: []string{consent.ScopeAccountsCreate}})
	tok := l.post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "scope": {consent.ScopeAccountsCreate}}, rs.id, rs.secret).
		want(b, 200, "").str("access_token")
	body := url.Values{"token": {tok}}.Encode()
	b.Run("handler", func(b *testing.B) {
		req, _ := http.NewRequest(http.MethodPost, "/oauth2/introspect", nil)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(url.QueryEscape(rs.id), url.QueryEscape(rs.secret))
		req.RemoteAddr = "127.0.0.1:40000"
		w := &nullWriter{header: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			r := req.Clone(req.Context())
			r.Body, r.ContentLength = readCloser{strings.NewReader(body), http.NoBody}, int64(len(body))
			clear(w.header)
			w.status, w.body = 0, 0
			l.handler.ServeHTTP(w, r)
			if w.status != http.StatusOK || w.body < 100 {
				b.Fatalf("HTTP %d, %d bytes", w.status, w.body)
			}
		}
	})
	b.Run("http", func(b *testing.B) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		defer client.CloseIdleConnections()
		b.SetParallelism(64 / runtime.GOMAXPROCS(0))
		before := cpuTime(b)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequest(http.MethodPost, l.url+"/oauth2/introspect", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.SetBasicAuth(url.QueryEscape(rs.id), url.QueryEscape(rs.secret))
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				raw, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				var answer map[string]any
				if err == nil {
					err = json.Unmarshal(raw, &answer)
				}
				if err != nil || answer["active"] != true {
					b.Errorf("introspection answered %v (%v)", answer, err)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64((cpuTime(b)-before).Microseconds())/float64(b.N), "cpu-µs/op")
	})
}

// cpuTime is the CPU time the process has used.
func cpuTime(tb testing.TB) time.Duration {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}

// introspectBoth answers one introspection request twice, on providers
// configured like the mounted one: from memory (fast reports whether the
// memory answered, and when it did not, the request went on to fosite as
// it came) and through fosite alone. It fails the test when the two
// answers differ in status, headers or a single byte.
func (l *oauthLedger) introspectBoth(target, auth, body string) (fast bool, answer *httptest.ResponseRecorder) {
	l.t.Helper()
	return l.introspectBothAt(l.server.Config(), "", target, auth, body)
}

// introspectBothAt is introspectBoth with cfg, and the request's Host
// header when host is not empty.
func (l *oauthLedger) introspectBothAt(cfg Config, host, target, auth, body string) (fast bool, answer *httptest.ResponseRecorder) {
	l.t.Helper()
	fromMemory := newOAuthProvider(cfg, l.app, slog.New(slog.DiscardHandler))
	viaFosite := newOAuthProvider(cfg, l.app, slog.New(slog.DiscardHandler))
	viaFosite.verifier = nil
	ask := func(o *oauthProvider) (bool, *httptest.ResponseRecorder) {
		req := httptest.NewRequest(http.MethodPost, target, strings.NewReader(body))
		if host != "" {
			req.Host = host
			req.Header.Set("X-Forwarded-Proto", "https")
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		c := l.server.Echo().NewContext(req, rec)
		fast := o.introspectFromMemory(c)
		if !fast {
			if err := o.introspect(c); err != nil {
				l.t.Fatal(err)
			}
		}
		return fast, rec
	}
	fast, answer = ask(fromMemory)
	if slow, want := ask(viaFosite); slow {
		l.t.Fatal("the provider without a verifier answered from memory")
	} else if answer.Code != want.Code || answer.Body.String() != want.Body.String() || !reflect.DeepEqual(answer.Header(), want.Header()) {
		l.t.Fatalf("from memory (%v): HTTP %d %v %q\nfosite: HTTP %d %v %q", fast, answer.Code, answer.Header(), answer.Body,
			want.Code, want.Header(), want.Body)
	}
	return fast, answer
}

func basic(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}

// Introspection from memory answers what fosite answers, byte for byte,
// for every kind of token and every way a token ends, and leaves to fosite
// (with the request as it came) what it does not answer.
func TestIntrospectionFromMemoryAnswersAsFosite(t *testing.T) {
	l := newOAuthLedger(t, nil)
	app := l.client("fleet", commands.RegisterClient{Scopes: []string{consent.ScopeProfile, consent.ScopeVehicleStatus}})
	rs := l.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}, Scopes: []string{consent.ScopeAccountsCreate}})
	mobile := l.client("mobile", commands.RegisterClient{Public: true, Scopes: []string{consent.ScopeProfile}})
	rsAuth := basic(rs.id, rs.secret)
	tokenForm := func(token string) string { return url.Values{"token": {token}}.Encode() }
	check := func(name string, wantFast bool, wantActive any, target, auth, body string) {
		t.Helper()
		fast, a := l.introspectBoth(target, auth, body)
		if fast != wantFast {
			t.Fatalf("%s: answered from memory %v, want %v: %s", name, fast, wantFast, a.Body)
		}
		var got map[string]any
		_ = json.Unmarshal(a.Body.Bytes(), &got)
		if got["active"] != wantActive {
			t.Fatalf("%s: HTTP %d %s", name, a.Code, a.Body)
		}
	}
	ctx := context.Background()

	acct := l.user(app, consent.ScopeProfile, consent.ScopeVehicleStatus)
	code, verifier := l.code(app, acct, consent.ScopeProfile+" "+consent.ScopeVehicleStatus)
	tok := l.exchange(app, code, verifier).want(t, 200, "")
	access, refresh := tok.str("access_token"), tok.str("refresh_token")
	cc := l.post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "scope": {consent.ScopeAccountsCreate}}, rs.id, rs.secret).
		want(t, 200, "").str("access_token")
	for _, name := range []string{"access_token", "refresh_token", "client_credentials"} {
		token := map[string]string{"access_token": access, "refresh_token": refresh, "client_credentials": cc}[name]
		check(name, true, true, "/oauth2/introspect", rsAuth, tokenForm(token))
		for _, hint := range []string{"access_token", "refresh_token", ""} {
			check(name+", hint "+hint, true, true, "/oauth2/introspect", rsAuth, url.Values{"token": {token}, "token_type_hint": {hint}}.Encode())
		}
		check(name+", unknown hint", false, true, "/oauth2/introspect", rsAuth, url.Values{"token": {token}, "token_type_hint": {"id_token"}}.Encode())
	}
	// The token's own client introspects it as well; escaped credentials
	// are unescaped as fosite does.
	check("own client", true, true, "/oauth2/introspect", basic(app.id, app.secret), tokenForm(access))
	var pct strings.Builder
	for _, b := range []byte(rs.secret) {
		fmt.Fprintf(&pct, "%%%02X", b)
	}
	check("percent-encoded secret", true, true, "/oauth2/introspect", "Basic "+base64.StdEncoding.EncodeToString([]byte(rs.id+":"+pct.String())), tokenForm(access))

	// Without a public URL the issuer is the request's own, escaped as
	// encoding/json escapes it.
	noPublicURL := l.server.Config()
	noPublicURL.PublicURL = ""
	for _, host := range []string{"ledger.example:8443", "a<b>&c\"é"} {
		if fast, _ := l.introspectBothAt(noPublicURL, host, "/oauth2/introspect", rsAuth, tokenForm(access)); !fast {
			t.Fatalf("host %q: not answered from memory", host)
		}
	}

	// Authentication that fails is fosite's to answer (401), and so is
	// anything the form parser does not take as it is.
	check("wrong secret", false, nil, "/oauth2/introspect", basic(rs.id, "wrong"), tokenForm(access))
	check("unknown client", false, nil, "/oauth2/introspect", basic(uuid.NewString(), rs.secret), tokenForm(access))
	check("not a client id", false, nil, "/oauth2/introspect", basic("resource", rs.secret), tokenForm(access))
	check("public client", false, nil, "/oauth2/introspect", basic(mobile.id, ""), tokenForm(access))
	check("no authentication", false, nil, "/oauth2/introspect", "", tokenForm(access))
	check("bearer", false, true, "/oauth2/introspect", "Bearer "+cc, tokenForm(access))
	check("access_token in the form", false, true, "/oauth2/introspect", rsAuth, url.Values{"token": {access}, "access_token": {cc}}.Encode())
	check("scope", false, true, "/oauth2/introspect", rsAuth, url.Values{"token": {access}, "scope": {consent.ScopeProfile}}.Encode())
	check("scope not granted", false, false, "/oauth2/introspect", rsAuth, url.Values{"token": {access}, "scope": {consent.ScopeAccountsCreate}}.Encode())
	check("pretty", false, true, "/oauth2/introspect?pretty", rsAuth, tokenForm(access))
	check("token twice", false, true, "/oauth2/introspect", rsAuth, tokenForm(access)+"&"+tokenForm(cc))
	check("escaped name", false, true, "/oauth2/introspect", rsAuth, "tok%65n="+access)
	check("semicolon", false, nil, "/oauth2/introspect", rsAuth, tokenForm(access)+";x=1")
	check("empty pairs", true, true, "/oauth2/introspect", rsAuth, "&&"+tokenForm(access)+"&")
	check("long body", false, true, "/oauth2/introspect", rsAuth, tokenForm(access)+"&token_type_hint=access_token"+strings.Repeat("&", 2*maxIntrospectBody))
	check("no token", false, false, "/oauth2/introspect", rsAuth, "token_type_hint=access_token")
	check("empty token", false, false, "/oauth2/introspect", rsAuth, "token=")
	check("unknown token", false, false, "/oauth2/introspect", rsAuth, tokenForm("nonsense.token"))
	key, sig, _ := strings.Cut(access, ".")
	forged := map[bool]string{true: "B", false: "A"}[key[0] == 'A'] + key[1:]
	check("forged key part", true, false, "/oauth2/introspect", rsAuth, tokenForm(forged+"."+sig))
	check("not base64", true, false, "/oauth2/introspect", rsAuth, tokenForm("***."+sig))

	// Every end of a token.
	now := time.Now().UTC()
	check("expired", true, false, "/oauth2/introspect", rsAuth, tokenForm(l.mintToken(rs, now.Add(-2*time.Hour), now.Add(-time.Hour))))
	check("unexpired", true, true, "/oauth2/introspect", rsAuth, tokenForm(l.mintToken(rs, now.Add(-time.Minute), now.Add(time.Hour))))
	next := l.refresh(app, refresh).want(t, 200, "")
	check("rotated refresh token", true, false, "/oauth2/introspect", rsAuth, tokenForm(refresh))
	check("superseded access token", true, false, "/oauth2/introspect", rsAuth, tokenForm(access))
	check("rotated to", true, true, "/oauth2/introspect", rsAuth, tokenForm(next.str("refresh_token")))
	l.post("/oauth2/revoke", url.Values{"token": {next.str("access_token")}}, app.id, app.secret).want(t, 200, "")
	check("revoked access token", true, false, "/oauth2/introspect", rsAuth, tokenForm(next.str("access_token")))
	check("revoked refresh token", true, false, "/oauth2/introspect", rsAuth, tokenForm(next.str("refresh_token")))

	code, verifier = l.code(app, acct, consent.ScopeProfile)
	granted := l.exchange(app, code, verifier).want(t, 200, "").str("access_token")
	pending, _ := l.code(app, acct, consent.ScopeProfile)
	check("authorization code", true, false, "/oauth2/introspect", rsAuth, tokenForm(pending))
	if err := l.cmds.RevokeAccess(ctx, acct, uuid.MustParse(app.id), "user"); err != nil {
		t.Fatal(err)
	}
	check("revoked grant", true, false, "/oauth2/introspect", rsAuth, tokenForm(granted))

	blocked := l.user(mobile, consent.ScopeProfile)
	code, verifier = l.code(mobile, blocked, consent.ScopeProfile)
	mobileToken := l.exchange(mobile, code, verifier).want(t, 200, "").str("access_token")
	check("before the block", true, true, "/oauth2/introspect", rsAuth, tokenForm(mobileToken))
	l.blockAccount(blocked, "0600000029")
	check("blocked account", true, false, "/oauth2/introspect", rsAuth, tokenForm(mobileToken))
}

// secretMatches is sha256Hasher's comparison: a secret of any length
// against its stored hash, and no secret against a public client's none.
func TestSecretMatches(t *testing.T) {
	for _, secret := range []string{"", "short", account.NewSecret(), strings.Repeat("long secret ", 40)} {
		if !secretMatches(account.HashToken(secret), secret) {
			t.Errorf("%q does not match its own hash", secret)
		}
		if secretMatches(account.HashToken(secret), secret+"x") || secretMatches("", secret) ||
			secretMatches(strings.ToUpper(account.HashToken(secret)), secret) {
			t.Errorf("%q matches what is not its hash", secret)
		}
	}
}

package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
)

// chromiumPath finds Debian's chromium (make test installs it). Without it
// the browser tests skip, except under CI where they must run.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (make test installs it with .ci/ensure-chromium)")
	}
	t.Skip("chromium is not installed: run .ci/ensure-chromium")
	return ""
}

// headless starts a browser the way this machine allows: no sandbox as
// root, and no background networking (only loopback is reachable here).
func headless(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profileDir(t)),
		chromedp.WindowSize(412, 915), // a phone
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	return ctx
}

// profileDir is the browser's profile. Chromium's helper processes may
// still write to it for a moment after the browser exits, so it is removed
// with a few retries instead of by t.TempDir's strict cleanup.
func profileDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "ledger-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 20 {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	return dir
}

// docsDir is the repository's docs/ folder.
func docsDir(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "docs")
}

// TestPromptInABrowser drives the consent prompt in headless Chromium
// through the real OAuth2 protocol: sign in, consent, the partner's
// callback receives a code, which it exchanges (PKCE S256) for tokens; then
// the decline path.
func TestPromptInABrowser(t *testing.T) {
	browserCtx := headless(t)

	callbacks := make(chan url.Values, 4)
	partner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/cb" {
			http.NotFound(w, r) // the browser also asks for /favicon.ico
			return
		}
		callbacks <- r.URL.Query()
		_, _ = w.Write([]byte("<!doctype html><title>partner</title><p>back at the partner"))
	}))
	defer partner.Close()

	l := newLedger(t, nil) // the real protocol answers the prompt
	redirect := partner.URL + "/cb"
	clientID := l.registerClient(map[string]any{"name": "Fleet App", "public": true, "redirectUris": []string{redirect},
		"scopes": []string{"account:profile"}}).want(t, 201, "").body["clientId"].(string)
	l.signIn("web@example.com", "phone")
	verifier := strings.Repeat("v", 20) + uuid.NewString() // 56 characters
	sum := sha256.Sum256([]byte(verifier))
	authorize := l.url + "/oauth2/authorize?" + url.Values{"client_id": {clientID}, "redirect_uri": {redirect},
		"response_type": {"code"}, "scope": {"account:profile"}, "state": {"state-xyz"},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}.Encode()

	signIn := func(password string) chromedp.Tasks {
		return chromedp.Tasks{
			chromedp.Navigate(authorize),
			chromedp.WaitVisible(`#email`, chromedp.ByQuery),
			chromedp.SendKeys(`#email`, "web@example.com", chromedp.ByQuery),
			chromedp.SendKeys(`#password`, password, chromedp.ByQuery),
			chromedp.Click(`button[type=submit]`, chromedp.ByQuery),
		}
	}

	// A wrong password shows an error on the sign-in page.
	var alert string
	if err := chromedp.Run(browserCtx, signIn("Wrong-Password-1"),
		chromedp.Text(`[role=alert]`, &alert, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(alert, "email or password is wrong") {
		t.Fatalf("alert %q", alert)
	}

	// The right one leads to the consent page; accept.
	var title string
	var shot []byte
	if err := chromedp.Run(browserCtx, signIn(pw),
		chromedp.WaitVisible(`button[value=accept]`, chromedp.ByQuery),
		chromedp.Title(&title),
		chromedp.FullScreenshot(&shot, 100), // 100: PNG
		chromedp.Click(`button[value=accept]`, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if title != "Fleet App asks for access" {
		t.Fatalf("title %q", title)
	}
	if err := os.MkdirAll(docsDir(t), 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(docsDir(t), "consent-prompt.png"), shot, 0o644)
	}
	var code string
	select {
	case q := <-callbacks:
		if code = q.Get("code"); code == "" || q.Get("state") != "state-xyz" {
			t.Fatalf("callback %v", q)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the partner's callback was never reached")
	}

	// The partner exchanges the code for tokens.
	resp, err := http.PostForm(l.url+"/oauth2/token", url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {verifier}})
	if err != nil {
		t.Fatal(err)
	}
	var tok map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if resp.StatusCode != 200 || tok["access_token"] == nil || tok["refresh_token"] == nil || tok["expires_in"] != 86400.0 {
		t.Fatalf("token exchange: HTTP %d %v", resp.StatusCode, tok)
	}

	// Decline: the partner hears access_denied.
	if err := chromedp.Run(browserCtx, signIn(pw),
		chromedp.WaitVisible(`button[value=deny]`, chromedp.ByQuery),
		chromedp.Click(`button[value=deny]`, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	select {
	case q := <-callbacks:
		if q.Get("error") != "access_denied" || q.Get("state") != "state-xyz" {
			t.Fatalf("callback %v", q)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the partner's callback was never reached after declining")
	}
}

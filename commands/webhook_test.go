package commands_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/commands"
)

func TestWebhookOutboxRetriesUntilDelivered(t *testing.T) {
	var calls atomic.Int32
	delivered := make(chan commands.Message, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte("s3cret"))
		mac.Write(body)
		if r.Header.Get("X-Ledger-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
			t.Error("bad signature")
		}
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable) // the gateway is down twice
			return
		}
		var m commands.Message
		_ = json.Unmarshal(body, &m)
		delivered <- m
	}))
	defer srv.Close()

	o := &commands.WebhookOutbox{URL: srv.URL, Secret: []byte("s3cret"), Backoff: time.Millisecond}
	o.Start(context.Background())
	defer o.Close()
	o.Send(context.Background(), commands.Message{Channel: "email", To: "a@example.com", Code: "123"})
	select {
	case m := <-delivered:
		if m.To != "a@example.com" || m.Code != "123" || calls.Load() != 3 {
			t.Fatalf("delivered %+v after %d calls", m, calls.Load())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("not delivered after %d calls", calls.Load())
	}
}

func TestWebhookOutboxGivesUpAfterItsAttempts(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	o := &commands.WebhookOutbox{URL: srv.URL, Secret: []byte("s"), Backoff: time.Millisecond, Attempts: 4}
	o.Start(context.Background())
	o.Send(context.Background(), commands.Message{Channel: "sms", To: "+33600000000"})
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() < 4 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	o.Close()
	if n := calls.Load(); n != 4 {
		t.Fatalf("%d attempts, want 4", n)
	}
}

func TestWebhookOutboxForgetsAnErasedAccount(t *testing.T) {
	erased, other := uuid.New(), uuid.New()
	var erasedCalls atomic.Int32
	delivered := make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		_ = json.NewDecoder(r.Body).Decode(&m)
		if _, ok := m["account"]; ok {
			t.Errorf("the gateway was sent the account: %v", m)
		}
		if m["to"] == "erased@example.com" {
			erasedCalls.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable) // to be retried
			return
		}
		delivered <- m["to"].(string)
	}))
	defer srv.Close()

	o := &commands.WebhookOutbox{URL: srv.URL, Secret: []byte("s"), Backoff: 200 * time.Millisecond}
	o.Start(context.Background())
	defer o.Close()
	o.Send(context.Background(), commands.Message{Channel: "email", To: "erased@example.com", Account: erased})
	deadline := time.Now().Add(10 * time.Second)
	for erasedCalls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	// Erased while its message waits for a retry; then a late message of
	// the erased account, and one of another account.
	o.Forget(erased)
	o.Send(context.Background(), commands.Message{Channel: "sms", To: "erased@example.com", Account: erased})
	o.Send(context.Background(), commands.Message{Channel: "email", To: "other@example.com", Account: other})
	select {
	case to := <-delivered:
		if to != "other@example.com" {
			t.Fatalf("delivered to %s", to)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the other account's message was not delivered")
	}
	if n := erasedCalls.Load(); n != 1 {
		t.Fatalf("the erased account's messages were posted %d times, want only the attempt before the erasure", n)
	}
}

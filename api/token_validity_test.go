package api

import (
	"testing"
	"time"

	"github.com/consentledger/ledger/projections"
)

// waitServing waits until the in-memory token model answers: it caught up
// with the log and published its first heartbeat.
func waitServing(t *testing.T, m *projections.TokenValidity) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !m.Serving() {
		if time.Now().After(deadline) {
			t.Fatal("the token-validity model never started answering")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

package audit_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain/audit"
	"github.com/consentledger/ledger/eventstore"
)

// sampleBundle writes a bundle of a two-event stream in a three-event log,
// with no database: what a fuzz target can start from.
func sampleBundle(t *testing.T) ([]byte, ed25519.PublicKey) {
	t.Helper()
	pub, key, _ := ed25519.GenerateKey(bytes.NewReader(make([]byte, 64)))
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	meta := eventstore.Metadata{Actor: "account:1", OccurredAt: at}
	var log [][]byte
	var events []audit.BundleEvent
	var prev []byte
	for i, data := range []string{`{"a": 1}`, `{"b": "Zoë"}`} {
		id := uuid.NewSHA1(uuid.Nil, []byte{byte(i)})
		h := eventstore.HashEvent(prev, "account-1", uint64(i), id, "account.x.v1", []byte(data), meta)
		log = append(log, h)
		events = append(events, audit.BundleEvent{LogIndex: uint64(len(log)), Position: eventstore.Position{Commit: 1, Prepare: uint64(len(log))},
			Stream: "account-1", Revision: uint64(i), ID: id, Type: "account.x.v1", Data: data, Metadata: meta, PrevHash: prev, Hash: h})
		prev = h
		log = append(log, eventstore.HashEvent(nil, "other-"+string(rune('a'+i)), 0, uuid.New(), "other.v1", []byte(`{}`), meta))
	}
	var rolling []byte
	for _, h := range log {
		rolling = eventstore.Roll(rolling, h)
	}
	pos := eventstore.Position{Commit: 1, Prepare: uint64(len(log))}
	var buf bytes.Buffer
	w := audit.NewBundleWriter(&buf)
	w.Header(audit.BundleHeader{AccountID: uuid.Nil, Streams: []string{"account-1"}, ExportedAt: at})
	for _, h := range log {
		w.Log(h)
	}
	for _, e := range events {
		w.Event(e)
	}
	w.Checkpoint(audit.BundleCheckpoint{Position: pos, Count: uint64(len(log)), RollingHash: rolling, LastEventAt: at, PublicKey: pub,
		Signature: ed25519.Sign(key, eventstore.CheckpointMessage(pos, uint64(len(log)), rolling, at))})
	if err := w.Seal(key); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), pub
}

func TestBundleRoundTripAndRefusals(t *testing.T) {
	good, pub := sampleBundle(t)
	b, err := audit.ReadBundle(bytes.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Verify(pub); err != nil {
		t.Fatalf("a bundle as written: %v", err)
	}
	if err := b.Verify(ed25519.PublicKey(make([]byte, 32))); err == nil {
		t.Fatal("verified against another key")
	}
	all := strings.Split(strings.TrimSuffix(string(good), "\n"), "\n")
	cases := map[string]string{
		"empty":            "",
		"no newline":       strings.TrimSuffix(string(good), "\n"),
		"no seal":          strings.Join(all[:len(all)-1], "\n") + "\n",
		"after the seal":   string(good) + all[0] + "\n",
		"header twice":     all[0] + "\n" + string(good),
		"unknown field":    strings.Replace(string(good), `{"kind":"header",`, `{"kind":"header","x":1,`, 1),
		"a huge line":      `{"kind":"header","format":"` + strings.Repeat("x", audit.MaxBundleLine) + "\"}\n",
		"not json":         "hello\n",
		"seal not as made": strings.Replace(string(good), `{"kind":"seal",`, `{"kind":"seal" ,`, 1),
	}
	for name, in := range cases {
		b, err := audit.ReadBundle(strings.NewReader(in))
		if err == nil {
			err = b.Verify(nil)
		}
		if !errors.Is(err, audit.ErrBundle) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Any byte changed fails reading or verifying.
	for i := range good {
		c := append([]byte(nil), good...)
		c[i] ^= 0x04
		b, err := audit.ReadBundle(bytes.NewReader(c))
		if err == nil {
			err = b.Verify(nil)
		}
		if err == nil {
			t.Fatalf("byte %d changed (%q), still verifies", i, good[max(0, i-20):min(len(good), i+20)])
		}
	}
}

package audit

import (
	"bytes"
	"crypto/ed25519"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/eventstore"
)

// validBundle writes a signed bundle of one account: three events of its
// stream among five of the log, then the checkpoint and the seal.
func validBundle(tb testing.TB) ([]byte, ed25519.PublicKey) {
	tb.Helper()
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	account := uuid.MustParse("6f9c1f3e-2d1b-4c58-9a3e-0b1c2d3e4f50")
	stream := "account-" + account.String()
	var buf bytes.Buffer
	w := NewBundleWriter(&buf)
	w.Header(BundleHeader{AccountID: account, Streams: []string{stream}, ExportedAt: at})
	var logHashes [][]byte
	var events []BundleEvent
	var prev, other []byte
	for i := range 5 {
		meta := eventstore.Metadata{Actor: "test", OccurredAt: at.Add(time.Duration(i) * time.Minute)}
		id := uuid.NewSHA1(uuid.NameSpaceOID, []byte{byte(i)})
		if i%2 == 1 { // another subject's event in between
			other = eventstore.HashEvent(other, "account-other", uint64(i/2), id, "account.activated.v1", []byte(`{}`), meta)
			logHashes = append(logHashes, other)
			continue
		}
		data := `{"accountId":"` + account.String() + `","n":` + string(rune('0'+i)) + `}`
		e := BundleEvent{LogIndex: uint64(i + 1), Position: eventstore.Position{Commit: uint64(100 + i), Prepare: uint64(i + 1)},
			Stream: stream, Revision: uint64(i / 2), ID: id, Type: "account.registered.v1", Data: data, Metadata: meta, PrevHash: prev}
		e.Hash = eventstore.HashEvent(prev, stream, e.Revision, id, e.Type, []byte(data), meta)
		prev = e.Hash
		logHashes = append(logHashes, e.Hash)
		events = append(events, e)
	}
	for _, h := range logHashes {
		w.Log(h)
	}
	for _, e := range events {
		w.Event(e)
	}
	var rolling []byte
	for _, h := range logHashes {
		rolling = eventstore.Roll(rolling, h)
	}
	pos := eventstore.Position{Commit: 104, Prepare: 5}
	last := at.Add(4 * time.Minute)
	w.Checkpoint(BundleCheckpoint{Position: pos, Count: uint64(len(logHashes)), RollingHash: rolling, LastEventAt: last,
		PublicKey: key.Public().(ed25519.PublicKey), Signature: ed25519.Sign(key, eventstore.CheckpointMessage(pos, uint64(len(logHashes)), rolling, last))})
	if err := w.Seal(key); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes(), key.Public().(ed25519.PublicKey)
}

// FuzzReadBundle reads any file as an audit bundle: the reader never
// panics, and a bundle that verifies under the trusted key says exactly
// what the signed original says (nobody can change a bundle without
// breaking a signature).
func FuzzReadBundle(f *testing.F) {
	original, trusted := validBundle(f)
	want, err := ReadBundle(bytes.NewReader(original))
	if err != nil {
		f.Fatal(err)
	}
	if err := want.Verify(trusted); err != nil {
		f.Fatalf("the seed bundle does not verify: %v", err)
	}
	f.Add(original)
	f.Add(bytes.Replace(original, []byte(`\"n\":2`), []byte(`\"n\":3`), 1))
	f.Add(original[:len(original)/2])
	f.Add([]byte(`{"kind":"header","format":"ledger-audit-bundle-v1"}` + "\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, file []byte) {
		b, err := ReadBundle(bytes.NewReader(file))
		if err != nil {
			return
		}
		if err := b.Verify(trusted); err != nil {
			return
		}
		if !reflect.DeepEqual(b.Header, want.Header) || !reflect.DeepEqual(b.Events, want.Events) ||
			!reflect.DeepEqual(b.LogHashes, want.LogHashes) || !reflect.DeepEqual(b.Checkpoint, want.Checkpoint) {
			t.Fatalf("a changed bundle verifies:\n%s", file)
		}
	})
}

package storetest

import (
	"bytes"
	"encoding/json"
	"sync"
	"testing"

	"github.com/consentledger/ledger/eventstore"
)

// chainCases are the contract of the tamper-evident chain (eventstore/chain.go).
var chainCases = []struct {
	name string
	run  func(*testing.T, Config)
}{
	{"ChainLinksEveryEventOfAStream", chainLinks},
	{"ChainHashesWhatIsReadBack", chainHashesWhatIsReadBack},
	{"ChainSurvivesConcurrentAppends", chainConcurrent},
	{"ChainIdempotentRetryKeepsHashes", chainIdempotentRetry},
	{"ChainSameOnEveryRead", chainSameOnEveryRead},
}

// CheckChain fails t unless evs (one whole stream, in revision order) are
// chained: each hash recomputes from the event, the first links to nothing
// and every other to the hash before it.
func CheckChain(t *testing.T, evs []eventstore.RecordedEvent) {
	t.Helper()
	var prev []byte
	for i, e := range evs {
		if len(e.Hash) != 32 {
			t.Fatalf("%s@%d: hash %x", e.StreamID, e.Revision, e.Hash)
		}
		if !bytes.Equal(e.PrevHash, prev) {
			t.Fatalf("%s@%d (index %d): prev hash %x, want %x", e.StreamID, e.Revision, i, e.PrevHash, prev)
		}
		if got := e.Rehash(); !bytes.Equal(got, e.Hash) {
			t.Fatalf("%s@%d: stored hash %x, recomputed %x (data %s)", e.StreamID, e.Revision, e.Hash, got, e.Data)
		}
		prev = e.Hash
	}
}

func chainLinks(t *testing.T, cfg Config) {
	s := cfg.New(t)
	stream := streamName(t)
	mustAppend(t, s, stream, eventstore.NoStream, events("chain.a.v1", 3)...)
	mustAppend(t, s, stream, eventstore.Exact(2), Event("chain.b.v1", 3))
	mustAppend(t, s, stream, eventstore.Any, Event("chain.c.v1", 4))
	mustAppend(t, s, stream, eventstore.StreamExists, events("chain.d.v1", 2)...)
	got := readAll(t, s, stream)
	if len(got) != 7 {
		t.Fatalf("%d events, want 7", len(got))
	}
	CheckChain(t, got)
	// Another stream starts its own chain.
	other := streamName(t)
	mustAppend(t, s, other, eventstore.Any, Event("chain.a.v1", 0))
	CheckChain(t, readAll(t, s, other))
}

// chainHashesWhatIsReadBack appends data a log may store in another form
// (the PostgreSQL log's jsonb reorders keys and drops spaces): the hash is
// of what a reader gets back.
func chainHashesWhatIsReadBack(t *testing.T, cfg Config) {
	s := cfg.New(t)
	stream := streamName(t)
	bodies := []string{
		`{ "zeta" : 1, "alpha": {"b": [1, 2.50, 1e2, -0.0], "a": null},  "name": "Zo\u00eb \ud83d\ude97 \"q\" \\ /"}`,
		`{"dup": 1, "dup": 2}`,
		`[]`,
		`"just a string"`,
	}
	for i, b := range bodies {
		ev := Event("chain.data.v1", i)
		ev.Data = json.RawMessage(b)
		if i == 1 {
			ev.Metadata = eventstore.Metadata{} // every field empty
		}
		mustAppend(t, s, stream, eventstore.Any, ev)
	}
	CheckChain(t, readAll(t, s, stream))
}

func chainConcurrent(t *testing.T, cfg Config) {
	s := cfg.New(t)
	stream := streamName(t)
	const writers = 12
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Append(ctxFor(t), stream, eventstore.Any, events("chain.any.v1", 1+i%2)...); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	CheckChain(t, readAll(t, s, stream))
}

func chainIdempotentRetry(t *testing.T, cfg Config) {
	s := cfg.New(t)
	stream := streamName(t)
	first := events("chain.a.v1", 2)
	mustAppend(t, s, stream, eventstore.NoStream, first...)
	next := events("chain.b.v1", 2)
	mustAppend(t, s, stream, eventstore.Exact(1), next...)
	before := readAll(t, s, stream)
	mustAppend(t, s, stream, eventstore.Exact(1), next...) // the retry
	after := readAll(t, s, stream)
	if len(after) != 4 {
		t.Fatalf("%d events after the retry, want 4", len(after))
	}
	for i := range after {
		if !bytes.Equal(before[i].Hash, after[i].Hash) {
			t.Fatalf("the retry changed hash %d", i)
		}
	}
	CheckChain(t, after)
}

// chainSameOnEveryRead: stream reads both ways, ReadAll and subscriptions
// carry the same hashes.
func chainSameOnEveryRead(t *testing.T, cfg Config) {
	s := cfg.New(t)
	stream := streamName(t)
	res := mustAppend(t, s, stream, eventstore.NoStream, events("chain.a.v1", 3)...)
	want := readAll(t, s, stream)
	CheckChain(t, want)
	byID := map[string][]byte{}
	for _, e := range want {
		byID[e.ID.String()] = e.Hash
	}
	check := func(how string, evs []eventstore.RecordedEvent) {
		t.Helper()
		n := 0
		for _, e := range evs {
			if h, ok := byID[e.ID.String()]; ok {
				n++
				if !bytes.Equal(h, e.Hash) || !bytes.Equal(e.Rehash(), e.Hash) {
					t.Fatalf("%s: hash of %s@%d differs", how, e.StreamID, e.Revision)
				}
			}
		}
		if n != len(want) {
			t.Fatalf("%s: saw %d of the %d events", how, n, len(want))
		}
	}
	back, err := s.ReadStream(ctxFor(t), stream, eventstore.ReadStreamOptions{Direction: eventstore.Backwards, FromEnd: true})
	if err != nil {
		t.Fatal(err)
	}
	check("backwards", back)
	waitHead(t, s, res.Position)
	all, err := s.ReadAll(ctxFor(t), eventstore.Start, 10000)
	if err != nil {
		t.Fatal(err)
	}
	check("read all", all)
	sub, err := s.SubscribeAll(ctxFor(t), eventstore.Start)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var got []eventstore.RecordedEvent
	for len(got) < len(all) {
		evs, err := sub.Next(ctxFor(t))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, evs...)
	}
	check("subscription", got)
}

package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/google/uuid"

	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/eventstore/esdbtest"
	"github.com/consentledger/ledger/migrations/dbtest"
)

// Per-stream linearizability: each stream is a register holding a list of
// event ids. An append with an expected revision succeeds exactly when the
// list ends at that revision (and adds its id), and fails with a conflict
// otherwise; a read returns the whole list. A history recorded from several
// goroutines must be explainable by one order of these operations that
// respects real time (porcupine checks that).

type streamOp struct {
	read     bool
	stream   string
	expected int64 // -1: no stream
	id       string
}

type streamOut struct {
	ok  bool   // append: written; false is a conflict
	ids string // read: the ids in order, comma-separated
}

var streamModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			s := op.Input.(streamOp).stream
			if _, ok := by[s]; !ok {
				order = append(order, s)
			}
			by[s] = append(by[s], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, s := range order {
			out = append(out, by[s])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		ids, in, out := state.(string), input.(streamOp), output.(streamOut)
		if in.read {
			return out.ids == ids, ids
		}
		revision := int64(-1)
		if ids != "" {
			revision = int64(strings.Count(ids, ",")) // ids holds revision+1 entries
		}
		if in.expected != revision {
			return !out.ok, ids
		}
		if !out.ok {
			return false, ids
		}
		if ids == "" {
			return true, in.id
		}
		return true, ids + "," + in.id
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(streamOp), output.(streamOut)
		if in.read {
			return fmt.Sprintf("read(%s) → [%s]", in.stream, out.ids)
		}
		return fmt.Sprintf("append(%s, expect %d, %s) → %v", in.stream, in.expected, in.id[:8], out.ok)
	},
}

// recordHistory runs clients goroutines, each doing ops operations on a few
// streams: read a stream, then append to it expecting the revision it read
// (stale whenever another client appended meanwhile), now and then
// expecting a revision off by one.
func recordHistory(t *testing.T, store eventstore.Store, clients, ops int) []porcupine.Operation {
	t.Helper()
	prefix := "lin" + uuid.NewString()[:8] + "-"
	streams := []string{prefix + "a", prefix + "b", prefix + "c"}
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var mu sync.Mutex
	var history []porcupine.Operation
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 9))
			record := func(in streamOp, call int64, out streamOut) {
				mu.Lock()
				history = append(history, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: now()})
				mu.Unlock()
			}
			last := map[string]int64{}
			for range ops {
				stream := streams[rng.IntN(len(streams))]
				if rng.IntN(2) == 0 {
					call := now()
					evs, err := store.ReadStream(context.Background(), stream, eventstore.ReadStreamOptions{Direction: eventstore.Forwards, Max: 10000})
					if err != nil {
						errs <- err
						return
					}
					ids := make([]string, len(evs))
					for i, ev := range evs {
						ids[i] = ev.ID.String()
					}
					record(streamOp{read: true, stream: stream}, call, streamOut{ids: strings.Join(ids, ",")})
					last[stream] = int64(len(evs)) - 1
					continue
				}
				expected := last[stream]
				if _, seen := last[stream]; !seen {
					expected = -1
				}
				if rng.IntN(5) == 0 {
					expected += int64(rng.IntN(3)) - 1
					expected = max(expected, -1)
				}
				exp := eventstore.NoStream
				if expected >= 0 {
					exp = eventstore.Exact(uint64(expected))
				}
				in := streamOp{stream: stream, expected: expected, id: uuid.NewString()}
				call := now()
				_, err := store.Append(context.Background(), stream, exp, eventstore.EventData{
					ID: uuid.MustParse(in.id), Type: "test.appended.v1", Data: []byte(`{}`),
					Metadata: eventstore.Metadata{Actor: "test", OccurredAt: time.Now().UTC()}})
				switch {
				case err == nil:
					record(in, call, streamOut{ok: true})
					last[stream] = expected + 1
				case errors.Is(err, eventstore.ErrWrongExpectedRevision):
					record(in, call, streamOut{ok: false})
				default:
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return history
}

func checkLinearizable(t *testing.T, store eventstore.Store) {
	t.Helper()
	history := recordHistory(t, store, 8, 60)
	var appends, conflicts int
	for _, op := range history {
		if in := op.Input.(streamOp); !in.read {
			if op.Output.(streamOut).ok {
				appends++
			} else {
				conflicts++
			}
		}
	}
	if appends == 0 || conflicts == 0 {
		t.Fatalf("the history has %d appends and %d conflicts: it tests nothing", appends, conflicts)
	}
	res, info := porcupine.CheckOperationsVerbose(streamModel, history, time.Minute)
	if res != porcupine.Ok {
		t.Fatalf("history of %d operations is %s; partial linearizations: %v", len(history), res, info.PartialLinearizations())
	}
	t.Logf("%d operations (%d appends, %d conflicts) are linearizable", len(history), appends, conflicts)

	// The checker would see a lost append: drop one acknowledged append from
	// every later read of its stream.
	tampered := tamper(history)
	if tampered == nil {
		t.Fatal("no read after an append to tamper with")
	}
	if res := porcupine.CheckOperations(streamModel, tampered); res {
		t.Fatal("a history with a lost append passed the check")
	}
}

// tamper removes the first acknowledged append that a later read shows
// from that read, which no linearization can explain.
func tamper(history []porcupine.Operation) []porcupine.Operation {
	for _, op := range history {
		in := op.Input.(streamOp)
		if in.read || !op.Output.(streamOut).ok {
			continue
		}
		for j, r := range history {
			rin := r.Input.(streamOp)
			if rin.read && rin.stream == in.stream && r.Call > op.Return && strings.Contains(r.Output.(streamOut).ids, in.id) {
				out := slices.Clone(history)
				ids := strings.Split(r.Output.(streamOut).ids, ",")
				kept := ids[:0]
				for _, id := range ids {
					if id != in.id {
						kept = append(kept, id)
					}
				}
				out[j].Output = streamOut{ids: strings.Join(kept, ",")}
				return out
			}
		}
	}
	return nil
}

func TestPostgresAppendsAreLinearizablePerStream(t *testing.T) {
	checkLinearizable(t, openPostgres(t, dbtest.URL(t)))
}

func TestESDBAppendsAreLinearizablePerStream(t *testing.T) {
	checkLinearizable(t, openESDB(t, esdbtest.Start(t), eventstore.ESDBOptions{}))
}

package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

// goal is the heap size at which the collector means to finish its next
// cycle.
func goal() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// goalAfterCollecting collects and waits for the floor to be applied to
// the cycle (its finalizer runs after it), until the goal is in [lo, hi].
func goalAfterCollecting(t *testing.T, lo, hi uint64) uint64 {
	t.Helper()
	runtime.GC()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g := goal()
		if lo <= g && g <= hi || time.Now().After(deadline) {
			return g
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFloorSetsTheHeapGoal(t *testing.T) {
	t.Setenv("GOGC", "") // the floor stands back for an operator's GOGC
	const MiB = 1 << 20
	runtime.GC()
	t.Logf("goal without a floor: %d MiB", goal()/MiB)

	f := Start(128 * MiB)
	defer f.Stop()
	if f.Bytes() != 128*MiB {
		t.Fatalf("floor in force = %d, want %d", f.Bytes(), 128*MiB)
	}
	// The goal counts stacks and globals with the heap: allow some MiB.
	if g := goalAfterCollecting(t, 120*MiB, 140*MiB); g < 120*MiB || g > 140*MiB {
		t.Fatalf("goal with a 128 MiB floor and a small live heap = %d MiB", g/MiB)
	}
	// 40 MiB live: the percentage must come down to keep the goal at the
	// floor, not stay where a 4 MiB heap put it (that would be over 1 GiB).
	live := make([]*[1 << 20]byte, 40)
	for i := range live {
		live[i] = new([1 << 20]byte)
	}
	if g := goalAfterCollecting(t, 120*MiB, 140*MiB); g < 120*MiB || g > 140*MiB {
		t.Fatalf("goal with a 128 MiB floor and 40 MiB live = %d MiB", g/MiB)
	}
	// 100 MiB live, above half the floor: GOGC's own pacing, twice the heap.
	for range 60 {
		live = append(live, new([1 << 20]byte))
	}
	if g := goalAfterCollecting(t, 195*MiB, 220*MiB); g < 195*MiB || g > 220*MiB {
		t.Fatalf("goal with a 128 MiB floor and 100 MiB live = %d MiB, want GOGC=%d's", g/MiB, f.base)
	}
	runtime.KeepAlive(live)

	f.Stop()
	if p := debug.SetGCPercent(f.base); p != f.base {
		t.Fatalf("GC percent after Stop = %d, want the process's %d back", p, f.base)
	}
}

func TestFloorLeavesAnOperatorsGOGCAlone(t *testing.T) {
	t.Setenv("GOGC", "100")
	before := debug.SetGCPercent(100)
	debug.SetGCPercent(before)
	f := Start(128 << 20)
	defer f.Stop()
	if f.Bytes() != 0 {
		t.Fatalf("floor in force with GOGC set = %d, want none", f.Bytes())
	}
	if p := debug.SetGCPercent(before); p != before {
		t.Fatalf("GC percent = %d, want the process's %d", p, before)
	}
}

func TestFloorLeavesRoomUnderAMemoryLimit(t *testing.T) {
	t.Setenv("GOGC", "")
	old := debug.SetMemoryLimit(64 << 20)
	defer debug.SetMemoryLimit(old)
	f := Start(128 << 20)
	defer f.Stop()
	if f.Bytes() > 32<<20 {
		t.Fatalf("floor under a 64 MiB limit = %d, want at most half of it", f.Bytes())
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "1048576": 1 << 20, "256MiB": 256 << 20, "1GiB": 1 << 30, " 512 KiB ": 512 << 10} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1MB", "MiB", "99999999999GiB"} {
		if _, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) accepted", in)
		}
	}
}

// Package gcfloor keeps the garbage collector's heap goal from falling
// below a floor, so a process with a small live heap and a high allocation
// rate does not collect dozens of times a second.
//
// The ledger's live heap is small (about 8 MB while it answers
// introspection at 50,000 requests/s) but every request allocates a few
// kilobytes, so with GOGC=100 the collector starts a cycle every 30 ms or
// so and a request that lands in a cycle waits for its mark assists: the
// collector, not the handler, set the tail latency. With a floor the goal
// is max(floor, live×(1+GOGC/100)): memory stays bounded by the floor
// while the heap is small, and once the live heap is large the collector
// paces exactly as GOGC says. This is what a memory ballast did before Go
// 1.19, without the ballast, and unlike GOGC=off with GOMEMLIMIT it does
// not make every process grow to its limit.
//
// The floor is applied after each collection (a finalizer on a sentinel
// object runs once per cycle) by setting the GC percentage that gives that
// goal for the live heap the cycle measured.
package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// maxPercent bounds the percentage the floor sets: with a live heap of a
// few megabytes even a large floor needs no more.
const maxPercent = 100_000

// Floor is a running heap floor; Stop ends it.
type Floor struct {
	bytes   uint64
	base    int // the GC percentage the process was given (GOGC)
	stopped atomic.Bool
	mu      sync.Mutex // orders a cycle's tune and Stop
	sample  []metrics.Sample
}

// sentinel is allocated per cycle; its finalizer runs after the cycle that
// found it unreachable. The pointer keeps it out of the tiny allocator,
// whose blocks may hold it alive past its cycle.
type sentinel struct{ _ *byte }

// Start keeps the heap goal at least bytes (less when a memory limit,
// GOMEMLIMIT or the cgroup's, would not leave room for twice the floor). It
// does nothing, and returns a Floor whose Stop does nothing, when bytes is
// 0, when GOGC is set in the environment (the operator chose the pacing),
// or when GOGC is off.
func Start(bytes uint64) *Floor {
	f := &Floor{sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	if limit := memoryLimit(); limit/2 < bytes {
		bytes = limit / 2
	}
	f.base = debug.SetGCPercent(100)
	debug.SetGCPercent(f.base)
	if bytes == 0 || os.Getenv("GOGC") != "" || f.base < 0 {
		f.stopped.Store(true)
		return f
	}
	f.bytes = bytes
	f.tune()
	f.arm()
	return f
}

// Bytes is the floor in force (0 when none is).
func (f *Floor) Bytes() uint64 {
	if f.stopped.Load() {
		return 0
	}
	return f.bytes
}

// Stop gives the collector back its original percentage.
func (f *Floor) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped.Swap(true) {
		return
	}
	debug.SetGCPercent(f.base)
}

func (f *Floor) arm() {
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.stopped.Load() {
			return
		}
		f.tune()
		f.arm()
	})
}

// tune sets the percentage whose goal, for the live heap the last cycle
// measured, is the floor; never less than the process's own.
func (f *Floor) tune() {
	metrics.Read(f.sample)
	live := uint64(4 << 20) // the runtime's own goal before its first cycle
	if f.sample[0].Value.Kind() == metrics.KindUint64 && f.sample[0].Value.Uint64() > live {
		live = f.sample[0].Value.Uint64()
	}
	percent := f.base
	if live < f.bytes {
		percent = max(percent, int(min((f.bytes-live)*100/live, maxPercent)))
	}
	debug.SetGCPercent(percent)
}

// memoryLimit is the smaller of GOMEMLIMIT (debug.SetMemoryLimit) and the
// cgroup v2 memory.max of the process; math.MaxInt64 when neither is set.
func memoryLimit() uint64 {
	limit := uint64(debug.SetMemoryLimit(-1))
	raw, err := os.ReadFile("/sys/fs/cgroup/memory.max")
	if err != nil {
		return limit
	}
	if n, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64); err == nil && n < limit {
		limit = n
	}
	return limit
}

// ParseBytes reads a size such as 256MiB, 1GiB, 512KiB or a plain number
// of bytes.
func ParseBytes(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	mult := uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if n > (1<<63)/mult {
		return 0, strconv.ErrRange
	}
	return n * mult, nil
}

package eventstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/migrations/dbtest"
)

// TestInstrumentCountsAppends appends through the instrumented PostgreSQL
// log and reads the counters: events by type for acknowledged appends, and
// each append by outcome; a refused append adds no event.
func TestInstrumentCountsAppends(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := eventstore.Instrument(openPostgres(t, dbtest.URL(t)), "postgres", reg)
	ctx := context.Background()
	ev := func(typ string) eventstore.EventData {
		return eventstore.EventData{ID: uuid.New(), Type: typ, Data: []byte(`{}`)}
	}
	if _, err := s.Append(ctx, "metrics-1", eventstore.NoStream, ev("test.opened.v1"), ev("test.noted.v1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "metrics-1", eventstore.Exact(0), ev("test.noted.v1")); !errors.Is(err, eventstore.ErrWrongExpectedRevision) {
		t.Fatalf("append at a stale revision: %v", err)
	}
	if _, err := s.Append(ctx, "metrics-1", eventstore.Exact(1), ev("test.noted.v1")); err != nil {
		t.Fatal(err)
	}

	events := func(typ string) float64 {
		return metricValue(t, reg, "ledger_events_appended_total", map[string]string{"adapter": "postgres", "type": typ})
	}
	appends := func(outcome string) float64 {
		return metricValue(t, reg, "ledger_eventstore_appends_total", map[string]string{"adapter": "postgres", "outcome": outcome})
	}
	if events("test.opened.v1") != 1 || events("test.noted.v1") != 2 {
		t.Fatalf("events appended: opened %v, noted %v; want 1 and 2", events("test.opened.v1"), events("test.noted.v1"))
	}
	if appends("ok") != 2 || appends("conflict") != 1 {
		t.Fatalf("appends: ok %v, conflict %v; want 2 and 1", appends("ok"), appends("conflict"))
	}
	if n := metricValue(t, reg, "ledger_eventstore_append_duration_seconds", map[string]string{"adapter": "postgres"}); n != 2 {
		t.Fatalf("append durations observed: %v, want 2", n)
	}

	// A second instrumented store in the process shares the series.
	again := eventstore.Instrument(s, "postgres", reg)
	if _, err := again.Append(ctx, "metrics-2", eventstore.NoStream, ev("test.opened.v1")); err != nil {
		t.Fatal(err)
	}
	if events("test.opened.v1") < 2 {
		t.Fatal("the second instrumented store does not share the counters")
	}
}

// metricValue sums the samples of name whose labels include labels.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

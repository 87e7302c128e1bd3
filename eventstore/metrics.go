package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Instrument returns s counting its appends on reg, labelled with adapter
// (postgres, esdb):
//
//	ledger_events_appended_total{adapter,type}        events of acknowledged appends
//	ledger_eventstore_appends_total{adapter,outcome}  appends: ok, conflict, duplicate, canceled, error
//	ledger_eventstore_append_duration_seconds{adapter} time to an acknowledged append
//
// An acknowledged append whose events already stood in the stream (a
// retried command) writes nothing and is counted all the same: the port does
// not tell the two apart. Reads and subscriptions pass straight through.
// Series already registered on reg (a second store in one process) are
// shared. The result unwraps to s (As, KeyringOf and Raw see
// through it).
func Instrument(s Store, adapter string, reg prometheus.Registerer) Store {
	m := &instrumented{Store: s, adapter: adapter,
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledger_events_appended_total",
			Help: "Events in acknowledged appends to the event log, by adapter and event type.",
		}, []string{"adapter", "type"}),
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledger_eventstore_appends_total",
			Help: "Appends to the event log, by adapter and outcome (ok, conflict, duplicate, canceled, error).",
		}, []string{"adapter", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ledger_eventstore_append_duration_seconds",
			Help:    "Time to an acknowledged append to the event log, by adapter.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"adapter"}),
	}
	m.events = registerShared(reg, m.events)
	m.appends = registerShared(reg, m.appends)
	m.duration = registerShared(reg, m.duration)
	return m
}

type instrumented struct {
	Store
	adapter  string
	events   *prometheus.CounterVec
	appends  *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// Unwrap returns the store it counts for.
func (m *instrumented) Unwrap() Store { return m.Store }

func (m *instrumented) Append(ctx context.Context, stream string, expected ExpectedRevision, events ...EventData) (AppendResult, error) {
	start := time.Now()
	res, err := m.Store.Append(ctx, stream, expected, events...)
	m.appends.WithLabelValues(m.adapter, appendOutcome(err)).Inc()
	if err != nil {
		return res, err
	}
	m.duration.WithLabelValues(m.adapter).Observe(time.Since(start).Seconds())
	for _, e := range events {
		m.events.WithLabelValues(m.adapter, e.Type).Inc()
	}
	return res, nil
}

func appendOutcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrWrongExpectedRevision):
		return "conflict"
	case errors.Is(err, ErrDuplicateEvent):
		return "duplicate"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	default:
		return "error"
	}
}

func registerShared[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(fmt.Sprintf("eventstore: register metrics: %v", err))
	}
	return c
}

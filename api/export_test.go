package api

import "time"

// WithLimitsClock makes the limits count time by now (tests move it).
func WithLimitsClock(l *Limits, now func() time.Time) { l.now = now }

// WithLimitsRefresh sets how stale an instance's view of other instances'
// limits may be (a nanosecond: read at every request).
func WithLimitsRefresh(l *Limits, d time.Duration) { l.refresh = d }

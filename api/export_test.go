package api

import "time"

// WithLimitsClock makes the limits count time by now (tests move it).
func WithLimitsClock(l *Limits, now func() time.Time) { l.now = now }

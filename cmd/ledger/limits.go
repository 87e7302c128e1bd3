package main

import (
	"fmt"
	"os"
	"time"

	"github.com/consentledger/ledger/api"
)

// loadLimits reads the bounds on secret guessing (see the README's table).
func loadLimits() (api.Limits, error) {
	var l api.Limits
	var err error
	if l.SourceFailures, err = envInt("LEDGER_SOURCE_FAILURES", api.DefaultSourceFailures); err != nil {
		return l, err
	}
	if l.ClientSecretFailures, err = envInt("LEDGER_CLIENT_SECRET_FAILURES", api.DefaultClientSecretFailures); err != nil {
		return l, err
	}
	l.Window = api.DefaultFailureWindow
	if v := os.Getenv("LEDGER_FAILURE_WINDOW"); v != "" {
		if l.Window, err = time.ParseDuration(v); err != nil || l.Window <= 0 {
			return l, fmt.Errorf("LEDGER_FAILURE_WINDOW: want a positive duration such as 15m, got %q", v)
		}
	}
	if l.TrustedProxies, err = api.ParseTrustedProxies(os.Getenv("LEDGER_TRUSTED_PROXIES")); err != nil {
		return l, fmt.Errorf("LEDGER_TRUSTED_PROXIES: %w", err)
	}
	return l, nil
}

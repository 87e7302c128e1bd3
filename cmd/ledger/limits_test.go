package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/consentledger/ledger/api"
)

func TestLoadLimits(t *testing.T) {
	for _, v := range []string{"LEDGER_SOURCE_FAILURES", "LEDGER_CLIENT_SECRET_FAILURES", "LEDGER_FAILURE_WINDOW", "LEDGER_TRUSTED_PROXIES"} {
		t.Setenv(v, "")
	}
	l, err := loadLimits()
	if err != nil || l.SourceFailures != api.DefaultSourceFailures || l.ClientSecretFailures != api.DefaultClientSecretFailures ||
		l.Window != api.DefaultFailureWindow || len(l.TrustedProxies) != 0 {
		t.Fatalf("defaults: %+v %v", l, err)
	}

	t.Setenv("LEDGER_SOURCE_FAILURES", "-1")
	t.Setenv("LEDGER_CLIENT_SECRET_FAILURES", "5")
	t.Setenv("LEDGER_FAILURE_WINDOW", "1h")
	t.Setenv("LEDGER_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7")
	l, err = loadLimits()
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32")}
	if err != nil || l.SourceFailures != -1 || l.ClientSecretFailures != 5 || l.Window != time.Hour ||
		len(l.TrustedProxies) != 2 || l.TrustedProxies[0] != want[0] || l.TrustedProxies[1] != want[1] {
		t.Fatalf("set: %+v %v", l, err)
	}

	for name, bad := range map[string]string{
		"LEDGER_SOURCE_FAILURES": "many", "LEDGER_FAILURE_WINDOW": "0s", "LEDGER_TRUSTED_PROXIES": "lb.example",
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(name, bad)
			if _, err := loadLimits(); err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("%s=%q: %v", name, bad, err)
			}
		})
	}
}

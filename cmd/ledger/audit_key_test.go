package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"
)

func TestAuditSigningKeyFromTheEnvironment(t *testing.T) {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	want := ed25519.NewKeyFromSeed(seed)
	for _, v := range []string{base64.StdEncoding.EncodeToString(seed), base64.RawURLEncoding.EncodeToString(seed)} {
		t.Setenv("LEDGER_AUDIT_SIGNING_KEY", v)
		c := config{}
		if err := c.auditSigningKey(); err != nil || !want.Equal(c.AuditKey) || c.AuditKeyRandom {
			t.Fatalf("%q: %v", v, err)
		}
	}
	for _, v := range []string{"not base64!", base64.StdEncoding.EncodeToString(seed[:31])} {
		t.Setenv("LEDGER_AUDIT_SIGNING_KEY", v)
		c := config{Dev: true}
		if err := c.auditSigningKey(); err == nil || !strings.Contains(err.Error(), "LEDGER_AUDIT_SIGNING_KEY") {
			t.Fatalf("%q accepted: %v", v, err)
		}
	}
	t.Setenv("LEDGER_AUDIT_SIGNING_KEY", "")
	if err := (&config{}).auditSigningKey(); err == nil {
		t.Fatal("no key outside dev mode was accepted")
	}
	dev := config{Dev: true}
	if err := dev.auditSigningKey(); err != nil || len(dev.AuditKey) != ed25519.PrivateKeySize || !dev.AuditKeyRandom {
		t.Fatalf("dev key: %v", err)
	}
}

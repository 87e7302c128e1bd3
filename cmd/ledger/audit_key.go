package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/consentledger/ledger/projections"
)

// auditSigningKey loads the Ed25519 key that signs audit checkpoints from
// LEDGER_AUDIT_SIGNING_KEY: the 32-byte seed, standard or URL base64 (with or
// without padding). Without one, dev mode makes a random key (its public key
// is printed at start, and checkpoints signed by it verify only against
// that); anywhere else serve refuses to start, for checkpoints signed by a
// key nobody kept prove nothing.
func (c *config) auditSigningKey() error {
	if _, err := checkpointPolicy(); err != nil {
		return err
	}
	if c.AuditKey != nil {
		return nil
	}
	v := strings.TrimSpace(os.Getenv("LEDGER_AUDIT_SIGNING_KEY"))
	if v == "" {
		if !c.Dev {
			return fmt.Errorf("LEDGER_AUDIT_SIGNING_KEY is required outside dev mode (an Ed25519 seed, base64; LEDGER_DEV=true generates one)")
		}
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return fmt.Errorf("generate an audit signing key: %w", err)
		}
		c.AuditKey, c.AuditKeyRandom = key, true
		return nil
	}
	seed, err := decodeBase64(v)
	if err != nil || len(seed) != ed25519.SeedSize {
		return fmt.Errorf("LEDGER_AUDIT_SIGNING_KEY must be a %d-byte Ed25519 seed in base64", ed25519.SeedSize)
	}
	c.AuditKey = ed25519.NewKeyFromSeed(seed)
	return nil
}

// decodeBase64 accepts the standard and URL alphabets, padded or not.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

func encodeBase64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// auditPublicKey is the base64 public key of the signing key, as printed and
// served.
func (c *config) auditPublicKey() string {
	return encodeBase64(c.AuditKey.Public().(ed25519.PublicKey))
}

// checkpointPolicy reads how often the audit_checkpoints projection records
// a checkpoint: LEDGER_AUDIT_CHECKPOINT_EVERY events (default 1000) or
// LEDGER_AUDIT_CHECKPOINT_INTERVAL of event time (a Go duration, default
// 1m), whichever comes first.
func checkpointPolicy() (projections.AuditCheckpoints, error) {
	p := projections.AuditCheckpoints{Every: projections.DefaultCheckpointEvery, Interval: projections.DefaultCheckpointInterval}
	every, err := envInt("LEDGER_AUDIT_CHECKPOINT_EVERY", p.Every)
	if err != nil {
		return p, err
	}
	if every < 1 {
		return p, fmt.Errorf("LEDGER_AUDIT_CHECKPOINT_EVERY must be at least 1")
	}
	p.Every = every
	if v := os.Getenv("LEDGER_AUDIT_CHECKPOINT_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return p, fmt.Errorf("LEDGER_AUDIT_CHECKPOINT_INTERVAL: want a positive duration such as 30s or 5m, got %q", v)
		}
		p.Interval = d
	}
	return p, nil
}

// auditCheckpoints is the projection as configured; serve refuses to start
// on a bad setting (checkpointPolicy), other commands fall back to the
// defaults.
func auditCheckpoints() projections.AuditCheckpoints {
	p, _ := checkpointPolicy()
	return p
}

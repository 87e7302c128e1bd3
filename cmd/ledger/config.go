package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/consentledger/ledger/api"
	"github.com/consentledger/ledger/cmd/internal/gcfloor"
)

// config is everything read from the environment (see the README's table).
type config struct {
	HTTPAddr           string
	DatabaseURL        string
	EventStoreURL      string
	AdminToken         string
	AdminTokenRandom   bool
	Dev                bool
	MaxDevices         int
	PublicURL          string
	OutboxWebhookURL   string
	OutboxWebhookToken string
	OAuthSecret        []byte
	LogLevel           slog.Level
	Limits             api.Limits
	AuditKey           ed25519.PrivateKey // see auditSigningKey
	AuditKeyRandom     bool
	GCHeapFloor        uint64 // see gcfloor
}

const defaultDatabaseURL = "postgres://postgres:postgres@127.0.0.1:5432/ledger?sslmode=disable"

func loadConfig() (config, error) {
	c := config{
		HTTPAddr:           env("LEDGER_HTTP_ADDR", ":8080"),
		DatabaseURL:        env("LEDGER_DATABASE_URL", defaultDatabaseURL),
		EventStoreURL:      os.Getenv("LEDGER_EVENTSTORE_URL"),
		AdminToken:         os.Getenv("LEDGER_ADMIN_TOKEN"),
		PublicURL:          strings.TrimRight(os.Getenv("LEDGER_PUBLIC_URL"), "/"),
		OutboxWebhookURL:   os.Getenv("LEDGER_OUTBOX_WEBHOOK_URL"),
		OutboxWebhookToken: os.Getenv("LEDGER_OUTBOX_WEBHOOK_SECRET"),
		OAuthSecret:        []byte(os.Getenv("LEDGER_OAUTH_SECRET")),
	}
	var err error
	if c.Dev, err = envBool("LEDGER_DEV", false); err != nil {
		return c, err
	}
	if c.MaxDevices, err = envInt("LEDGER_MAX_DEVICES_PER_ACCOUNT", 5); err != nil {
		return c, err
	}
	if c.MaxDevices < 1 {
		return c, fmt.Errorf("LEDGER_MAX_DEVICES_PER_ACCOUNT must be at least 1")
	}
	if c.GCHeapFloor, err = gcfloor.ParseBytes(env("LEDGER_GC_HEAP_FLOOR", "256MiB")); err != nil {
		return c, fmt.Errorf("LEDGER_GC_HEAP_FLOOR: %w (a size such as 256MiB, or 0)", err)
	}
	if c.Limits, err = loadLimits(); err != nil {
		return c, err
	}
	if err := c.LogLevel.UnmarshalText([]byte(env("LEDGER_LOG_LEVEL", "info"))); err != nil {
		return c, fmt.Errorf("LEDGER_LOG_LEVEL: %w", err)
	}
	if c.EventStoreURL != "" && !strings.HasPrefix(c.EventStoreURL, "esdb://") && !strings.HasPrefix(c.EventStoreURL, "esdb+discover://") {
		return c, fmt.Errorf("LEDGER_EVENTSTORE_URL must start with esdb:// or esdb+discover://")
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		return c, fmt.Errorf("LEDGER_ADMIN_TOKEN must be at least 16 characters")
	}
	if len(c.OAuthSecret) > 0 && len(c.OAuthSecret) < 32 {
		return c, fmt.Errorf("LEDGER_OAUTH_SECRET must be at least 32 bytes")
	}
	if c.OutboxWebhookURL != "" && c.OutboxWebhookToken == "" {
		return c, fmt.Errorf("LEDGER_OUTBOX_WEBHOOK_SECRET is required with LEDGER_OUTBOX_WEBHOOK_URL (requests are signed)")
	}
	if c.OutboxWebhookURL == "" && !c.Dev {
		slog.Warn("no LEDGER_OUTBOX_WEBHOOK_URL: activation e-mails and codes are not delivered")
	}
	return c, nil
}

// adminToken makes sure serve has an admin token: the configured one, or in
// dev mode a random one (printed at start). Other commands need none.
func (c *config) adminToken() error {
	if c.AdminToken != "" {
		return nil
	}
	if !c.Dev {
		return fmt.Errorf("LEDGER_ADMIN_TOKEN is required outside dev mode (LEDGER_DEV=true generates one)")
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	c.AdminToken, c.AdminTokenRandom = base64.RawURLEncoding.EncodeToString(b), true
	return nil
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envBool(name string, def bool) (bool, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s: want true or false, got %q", name, v)
	}
	return b, nil
}

func envInt(name string, def int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s: want a whole number, got %q", name, v)
	}
	return n, nil
}

package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/consentledger/ledger/api"
	"github.com/consentledger/ledger/cmd/internal/gcfloor"
	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain/enrollment"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/migrations"
	"github.com/consentledger/ledger/projections"
)

func serve(ctx context.Context, cfg config, logger *slog.Logger, out io.Writer) error {
	if err := cfg.adminToken(); err != nil {
		return err
	}
	if err := cfg.auditSigningKey(); err != nil {
		return err
	}
	floor := gcfloor.Start(cfg.GCHeapFloor)
	defer floor.Stop()
	logger.Debug("garbage collector", "heapFloorBytes", floor.Bytes())
	pool, store, err := open(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer store.Close()

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	store = eventstore.Instrument(store, eventLogAdapter(cfg), registry)
	runner := projections.NewRunner(pool, store, logger, registry, allProjections()...)
	// The token model reads no personal data: it tails the log as stored,
	// so catching up costs it no key look-up, even while the keyring does
	// not trust its cache (see forgetErased).
	tokens := projections.NewTokenValidity(pool, eventstore.Raw(store), logger)
	webhooks, err := webhookSender(cfg, pool, logger)
	if err != nil {
		return err
	}

	var outboxes commands.Outboxes
	var devOutbox *commands.MemoryOutbox
	if cfg.Dev {
		devOutbox = commands.NewMemoryOutbox(1000)
		outboxes = append(outboxes, devOutbox)
	}
	if cfg.OutboxWebhookURL != "" {
		hook := &commands.WebhookOutbox{URL: cfg.OutboxWebhookURL, Secret: []byte(cfg.OutboxWebhookToken), Logger: logger}
		hook.Start(ctx)
		defer hook.Close()
		outboxes = append(outboxes, hook)
	}
	forgetErased(tokens, store, outboxes)

	publicURL := cfg.PublicURL
	if publicURL == "" {
		publicURL = localURL(cfg.HTTPAddr)
	}
	server := api.New(api.Config{Addr: cfg.HTTPAddr, Dev: cfg.Dev, AdminToken: cfg.AdminToken,
		PublicURL: publicURL, OAuthSecret: cfg.OAuthSecret, Limits: cfg.Limits}, api.Deps{
		Pool: pool, Logger: logger, Registry: registry,
		Ready: []api.ReadyCheck{
			{Name: "database", Check: pool.Ping},
			{Name: "eventstore", Check: store.Ping},
			{Name: "migrations", Check: func(ctx context.Context) error {
				v, err := migrations.Current(ctx, pool)
				if err == nil && v < migrations.Latest() {
					err = fmt.Errorf("schema at version %d, this build needs %d", v, migrations.Latest())
				}
				return err
			}},
		},
	})
	policy := enrollment.DefaultPolicy
	policy.MaxDevices = cfg.MaxDevices
	handler := commands.New(commands.Deps{
		Store: store, Outbox: outboxes, Consistency: projections.Consistency{runner, tokens}, Logger: logger, PublicURL: publicURL,
		Enrollment: policy,
	})
	api.Mount(server, api.App{
		Commands: handler, Pool: pool, Store: store, Runner: runner, DevOutbox: devOutbox, Tokens: tokens,
		AuditKey: cfg.AuditKey,
	})

	fmt.Fprintf(out, "Consent Ledger serving on %s\n", publicURL)
	if cfg.AdminTokenRandom {
		fmt.Fprintf(out, "dev admin token (generated, set LEDGER_ADMIN_TOKEN to choose one): %s\n", cfg.AdminToken)
	}
	if cfg.AuditKeyRandom {
		fmt.Fprintf(out, "dev audit signing key (generated, set LEDGER_AUDIT_SIGNING_KEY to keep one), public key: %s\n", cfg.auditPublicKey())
	}
	if cfg.EventStoreURL != "" {
		fmt.Fprintln(out, "event log: EventStoreDB")
	} else {
		fmt.Fprintln(out, "event log: PostgreSQL (embedded)")
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Add(3)
	go func() { defer wg.Done(); errs <- runner.Run(ctx) }()
	go func() { defer wg.Done(); errs <- server.Run(ctx) }()
	go func() {
		defer wg.Done()
		errs <- purgeIdempotencyKeys(ctx, server, logger)
	}()
	// The token-validity model retries on its own and returns only when ctx
	// ends; until it answers, OAuth2 reads go to the database.
	wg.Add(1)
	go func() { defer wg.Done(); _ = tokens.Run(ctx) }()
	if webhooks != nil {
		// Outside the three: it returns only when ctx ends, and what it
		// has not sent stays queued for the next start.
		wg.Add(1)
		go func() { defer wg.Done(); _ = webhooks.Run(ctx) }()
	}
	// The first of the three to end ends the others: a server without its
	// projections would answer from stale read models forever.
	first := <-errs
	cancel()
	wg.Wait()
	if first != nil && !errors.Is(first, context.Canceled) {
		return first
	}
	logger.Info("stopped")
	return nil
}

func purgeIdempotencyKeys(ctx context.Context, server *api.Server, logger *slog.Logger) error {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if n, err := server.PurgeIdempotencyKeys(ctx, 24*time.Hour); err != nil {
				logger.Warn("purging idempotency keys failed", "error", err)
			} else if n > 0 {
				logger.Info("purged idempotency keys", "count", n)
			}
			if _, err := server.PurgePromptFlows(ctx); err != nil {
				logger.Warn("purging expired consent-prompt flows failed", "error", err)
			}
		}
	}
}

// webhookSender sends the partner webhooks the webhooks projection queues,
// signed with keys derived from LEDGER_WEBHOOK_KEY (at least 32 bytes). In
// dev mode without one it makes a random key, so signatures change at every
// restart. Outside dev mode without one nothing is sent, but deliveries keep
// being queued and go out once a key is set.
func webhookSender(cfg config, pool *pgxpool.Pool, logger *slog.Logger) (*projections.WebhookSender, error) {
	key := []byte(os.Getenv("LEDGER_WEBHOOK_KEY"))
	switch {
	case len(key) >= 32:
	case len(key) > 0:
		return nil, fmt.Errorf("LEDGER_WEBHOOK_KEY must be at least 32 bytes")
	case cfg.Dev:
		key = make([]byte, 32)
		_, _ = rand.Read(key)
		logger.Warn("no LEDGER_WEBHOOK_KEY: partner webhooks are signed with a random key, so their signatures change at every restart")
	default:
		logger.Warn("no LEDGER_WEBHOOK_KEY: partner webhooks are queued but not sent")
		return nil, nil
	}
	return projections.NewWebhookSender(pool, key, logger), nil
}

// localURL turns a listen address into the URL a person on this machine
// would open.
func localURL(addr string) string {
	host, port, ok := strings.Cut(addr, ":")
	if !ok {
		return "http://" + addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return "http://" + host + ":" + port
}

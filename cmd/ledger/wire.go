package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/migrations"
	"github.com/consentledger/ledger/projections"
)

// allProjections is every read model, wired by hand. A name never changes:
// it keys the projection's checkpoint.
func allProjections() []projections.Projection {
	return []projections.Projection{
		projections.Accounts{},
		projections.Enrollment{},
		projections.Vehicles{},
		projections.Steps{},
		projections.Clients{},
		projections.Consents{},
		projections.Webhooks{},
		projections.OAuthTokens{},
		projections.Subjects{},
		projections.SecurityEvents{},
		auditCheckpoints(),
	}
}

func openPool(ctx context.Context, cfg config) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("LEDGER_DATABASE_URL: %w", err)
	}
	if pc.MaxConns < 20 {
		pc.MaxConns = 20
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database %s:%d: %w", pc.ConnConfig.Host, pc.ConnConfig.Port, err)
	}
	return pool, nil
}

// openStore selects the event log: EventStoreDB when LEDGER_EVENTSTORE_URL
// is set, else the PostgreSQL log in the read models' database.
func openStore(ctx context.Context, cfg config, pool *pgxpool.Pool, logger *slog.Logger) (eventstore.Store, error) {
	if cfg.EventStoreURL != "" {
		s, err := eventstore.OpenESDB(ctx, cfg.EventStoreURL, eventstore.ESDBOptions{
			StreamPrefixes: domain.StreamPrefixes, Logger: logger,
		})
		if err != nil {
			return nil, fmt.Errorf("EventStoreDB: %w", err)
		}
		return s, nil
	}
	return eventstore.OpenPostgres(ctx, pool, eventstore.PostgresOptions{Logger: logger})
}

// eventLogAdapter names the configured event log in metrics.
func eventLogAdapter(cfg config) string {
	if cfg.EventStoreURL != "" {
		return "esdb"
	}
	return "postgres"
}

// open connects, migrates and opens the log: what every command needs.
func open(ctx context.Context, cfg config, logger *slog.Logger) (*pgxpool.Pool, eventstore.Store, error) {
	pool, err := openPool(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	if _, err := migrations.Apply(ctx, pool); err != nil {
		pool.Close()
		return nil, nil, err
	}
	store, err := openStore(ctx, cfg, pool, logger)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	sealed, err := sealStore(cfg, pool, store)
	if err != nil {
		_ = store.Close()
		pool.Close()
		return nil, nil, err
	}
	return pool, sealed, nil
}

func migrate(ctx context.Context, cfg config, out io.Writer) error {
	pool, err := openPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := migrations.Apply(ctx, pool)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintf(out, "schema is up to date (version %d)\n", migrations.Latest())
		return nil
	}
	fmt.Fprintf(out, "applied migrations %v; schema is at version %d\n", applied, migrations.Latest())
	return nil
}

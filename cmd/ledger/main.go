// Command ledger runs Consent Ledger: the HTTP API with its projectors
// (serve), schema migrations (migrate) and read-model operations
// (projections list / rebuild).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: ledger <command>

commands:
  serve                                  serve the HTTP API and run the projections
  migrate                                apply the database migrations and exit
  projections list                       show each projection's position, state and error
  projections rebuild [NAME...|--all]    rebuild read models from the event log
  eventstore copy --to esdb://…          copy the event log into EventStoreDB, in order (resumable)
  audit export --account ID [--out FILE] write an account's signed audit bundle
  audit verify [--public-key K] FILE     check a bundle offline; exit 0 only when valid

configuration comes from LEDGER_* environment variables (see README.md).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "ledger:", err)
		}
		os.Exit(exitCode(err))
	}
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	if len(args) >= 2 && args[0] == "audit" && args[1] == "verify" {
		return auditVerify(args[2:], stdout, stderr) // offline: no configuration
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	slog.SetDefault(logger)

	switch args[0] {
	case "serve":
		return serve(ctx, cfg, logger, stdout)
	case "migrate":
		return migrate(ctx, cfg, stdout)
	case "projections":
		if len(args) >= 2 && args[1] == "list" {
			return projectionsList(ctx, cfg, logger, stdout)
		}
		if len(args) >= 2 && args[1] == "rebuild" {
			return projectionsRebuild(ctx, cfg, logger, args[2:], stdout, stderr)
		}
	case "eventstore":
		if len(args) >= 2 && args[1] == "copy" {
			return eventstoreCopy(ctx, cfg, logger, args[2:], stdout, stderr)
		}
	case "audit":
		if len(args) >= 2 && args[1] == "export" {
			return auditExport(ctx, cfg, logger, args[2:], stdout, stderr)
		}
	}
	fmt.Fprint(stderr, usage)
	return errUsage
}

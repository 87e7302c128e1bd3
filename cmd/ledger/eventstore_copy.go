package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

// eventstoreCopy copies the configured event log (the PostgreSQL log unless
// LEDGER_EVENTSTORE_URL is set) into the EventStoreDB named by --to, which
// is how an installation moves from the embedded log to EventStoreDB.
//
// The copy keeps order, ids and metadata, and a second run resumes where an
// interrupted one stopped (see eventstore.Copy). So it can run while the
// ledger still serves, and once more after the ledger stopped to bring over
// what was appended meanwhile; only then does LEDGER_EVENTSTORE_URL switch.
func eventstoreCopy(ctx context.Context, cfg config, logger *slog.Logger, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("ledger eventstore copy", flag.ContinueOnError)
	fs.SetOutput(errOut)
	to := fs.String("to", "", "the EventStoreDB to copy into: esdb://… or esdb+discover://… (TLS and credentials as in LEDGER_EVENTSTORE_URL)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("eventstore copy: unexpected arguments %q", fs.Args())
	case *to == "":
		return errors.New("eventstore copy: --to esdb://… is required: the EventStoreDB to copy the event log into")
	case !strings.HasPrefix(*to, "esdb://") && !strings.HasPrefix(*to, "esdb+discover://"):
		return errors.New("eventstore copy: --to must start with esdb:// or esdb+discover://")
	case *to == cfg.EventStoreURL:
		return errors.New("eventstore copy: --to is LEDGER_EVENTSTORE_URL, the log being copied")
	}

	pool, source, err := open(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer source.Close()
	source = eventstore.Raw(source) // copy what is stored: personal data stays sealed
	target, err := eventstore.OpenESDB(ctx, *to, eventstore.ESDBOptions{StreamPrefixes: domain.StreamPrefixes, Logger: logger})
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	defer target.Close()

	from, dest := "the PostgreSQL log", redacted(*to)
	if cfg.EventStoreURL != "" {
		from = "EventStoreDB at " + redacted(cfg.EventStoreURL)
	}
	resuming, err := sameStart(ctx, source, target)
	if err != nil {
		return err
	}
	if resuming {
		fmt.Fprintf(errOut, "%s already holds the start of this log: resuming; events already there are recognised and not written again\n", dest)
	}
	head, err := source.Head(ctx)
	if err != nil {
		return err
	}

	fmt.Fprintf(errOut, "copying %s to %s\n", from, dest)
	bar := newProgressBar(errOut, "copy")
	start := time.Now()
	n, err := eventstore.Copy(ctx, source, target, func(copied int64, at eventstore.Position) {
		bar.update(projections.Progress{Events: copied, Done: at.Prepare, Total: max(head.Prepare, at.Prepare), Elapsed: time.Since(start)})
	})
	if err != nil {
		bar.fail()
		return fmt.Errorf("copy to %s stopped after %d events (run the same command again to resume): %w", dest, n, err)
	}
	bar.update(projections.Progress{Events: n, Done: 1, Total: 1, Elapsed: time.Since(start)})
	bar.done()
	fmt.Fprintf(out, "copied %d events to %s\n", n, dest)
	fmt.Fprintf(out, "next: stop the ledger, run this command again for what was appended meanwhile, then set LEDGER_EVENTSTORE_URL to that EventStoreDB and run `ledger projections rebuild --all`\n")
	return nil
}

// sameStart tells a target that holds an earlier run's copy (true) from an
// empty one (false), and refuses a target whose ledger streams begin with
// another event: copying there would interleave two histories in $all.
func sameStart(ctx context.Context, source, target eventstore.Store) (bool, error) {
	t, err := target.ReadAll(ctx, eventstore.Start, 1)
	if err != nil || len(t) == 0 {
		return false, err
	}
	s, err := source.ReadAll(ctx, eventstore.Start, 1)
	if err != nil {
		return false, err
	}
	if len(s) == 0 || s[0].ID != t[0].ID {
		return false, fmt.Errorf("the target EventStoreDB already holds ledger events that are not a copy of this log (its first is %s in %q): copy into an empty one", t[0].ID, t[0].StreamID)
	}
	return true, nil
}

// redacted is a connection string fit for output: without its password.
func redacted(conn string) string {
	u, err := url.Parse(conn)
	if err != nil {
		return "the EventStoreDB"
	}
	return u.Redacted()
}

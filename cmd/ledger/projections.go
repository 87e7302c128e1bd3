package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/consentledger/ledger/projections"
)

func projectionNames(ps []projections.Projection) []string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name()
	}
	return names
}

func projectionsList(ctx context.Context, cfg config, logger *slog.Logger, out io.Writer) error {
	pool, store, err := open(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer store.Close()
	st, err := projections.ListStatus(ctx, pool, store, projectionNames(allProjections()))
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSTATE\tRUNNING ON\tPOSITION\tHEAD\tLAG EVENTS\tLAG MS\tEVENTS/S\tAPPLIED\tLAST EVENT\tREBUILD\tERROR")
	for _, s := range st {
		last, errText, on, rebuild := "-", "-", "-", "-"
		if s.LastEventAt != nil {
			last = s.LastEventAt.UTC().Format(time.RFC3339)
		}
		if s.Error != nil {
			errText = s.Error.Message
			if s.Error.EventType != nil && s.Error.Position != nil {
				errText = fmt.Sprintf("%s at %d: %s", *s.Error.EventType, *s.Error.Position, s.Error.Message)
			}
		}
		if s.RunningOn != "" {
			on = s.RunningOn
		}
		if r := s.Rebuild; r != nil {
			rebuild = r.Phase
			if r.Running {
				rebuild = fmt.Sprintf("%s %.0f%%", r.Phase, r.Percent)
				if r.EtaSeconds != nil {
					rebuild += fmt.Sprintf(" eta %s", (time.Duration(*r.EtaSeconds) * time.Second).String())
				}
			}
		}
		lag := strconv.FormatInt(s.LagEvents, 10)
		if s.LagCapped {
			lag += "+"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.0f\t%d\t%s\t%s\t%s\n", s.Name, s.State, on, s.Position, s.Head,
			lag, s.LagMs, s.EventsPerSecond, s.EventsApplied, last, rebuild, errText)
	}
	return w.Flush()
}

func projectionsRebuild(ctx context.Context, cfg config, logger *slog.Logger, args []string, out, errOut io.Writer) error {
	all := allProjections()
	var chosen []projections.Projection
	switch {
	case len(args) == 1 && args[0] == "--all":
		chosen = all
	case len(args) == 0:
		return fmt.Errorf("name the projections to rebuild, or --all (known: %s)", strings.Join(projectionNames(all), ", "))
	default:
		byName := map[string]projections.Projection{}
		for _, p := range all {
			byName[p.Name()] = p
		}
		for _, name := range args {
			p, ok := byName[name]
			if !ok {
				return fmt.Errorf("unknown projection %q (known: %s)", name, strings.Join(projectionNames(all), ", "))
			}
			chosen = append(chosen, p)
		}
	}
	pool, store, err := open(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer store.Close()
	for _, p := range chosen {
		bar := newProgressBar(errOut, p.Name())
		if err := projections.Rebuild(ctx, pool, store, p, bar.update); err != nil {
			bar.fail()
			if errors.Is(err, projections.ErrRebuildInProgress) {
				return fmt.Errorf("rebuild %s: %w (on this or another instance)", p.Name(), err)
			}
			return err
		}
		bar.done()
		fmt.Fprintf(out, "rebuilt %s\n", p.Name())
	}
	return nil
}

// progressBar draws a bar with an ETA on a terminal and prints a line every
// few seconds otherwise (logs, CI).
type progressBar struct {
	w         io.Writer
	name      string
	tty       bool
	last      projections.Progress
	lastPrint time.Time
}

func newProgressBar(w io.Writer, name string) *progressBar {
	f, ok := w.(*os.File)
	return &progressBar{w: w, name: name, tty: ok && term.IsTerminal(int(f.Fd()))}
}

func (b *progressBar) update(p projections.Progress) {
	b.last = p
	if !b.tty && time.Since(b.lastPrint) < 2*time.Second {
		return
	}
	b.lastPrint = time.Now()
	frac := 1.0
	if p.Total > 0 {
		frac = min(float64(p.Done)/float64(p.Total), 1)
	}
	eta := "-"
	if frac > 0 && frac < 1 {
		eta = (time.Duration(float64(p.Elapsed)/frac) - p.Elapsed).Round(time.Second).String()
	}
	if !b.tty {
		fmt.Fprintf(b.w, "%s: %s, %d events, %.0f%%, eta %s\n", b.name, p.Phase, p.Events, frac*100, eta)
		return
	}
	const width = 30
	filled := int(frac * width)
	fmt.Fprintf(b.w, "\r%-12s [%s%s] %3.0f%% %d events  eta %s  %-11s", b.name,
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), frac*100, p.Events, eta, p.Phase)
}

func (b *progressBar) done() {
	if b.tty {
		fmt.Fprintln(b.w)
	}
	fmt.Fprintf(b.w, "%s: %d events in %s\n", b.name, b.last.Events, b.last.Elapsed.Round(time.Millisecond))
}

func (b *progressBar) fail() {
	if b.tty {
		fmt.Fprintln(b.w)
	}
}

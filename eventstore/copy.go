package eventstore

import (
	"context"
	"errors"
	"fmt"
)

// Limits of one append made by Copy. EventStoreDB refuses an append larger
// than its MaxAppendSize (1 MiB by default), so a batch stops well below it;
// an event larger than the limit on its own still goes, alone.
const (
	copyPage       = 1000
	copyMaxEvents  = 500
	copyMaxBytes   = 512 << 10
	copyEventFixed = 128 // per event beside data and metadata strings: id, time, field names, framing
)

// Copy appends every event of from's log to to, in from's order, and returns
// how many events of from's log now stand in to.
//
// Each event goes to the stream it came from, with its id, type, data and
// metadata, at its own revision: an append expects exactly the revision
// before its first event (NoStream for revision 0). Consecutive events of
// one stream go in one append. Appending in from's order keeps to's $all in
// the same order, so projections rebuilt from to see what they saw before.
//
// Copy can be run again after an interruption, or to bring over what was
// appended since: an append whose events already stand at that place (same
// ids) succeeds without writing, which both logs guarantee. A batch that
// stands there only in part, because the earlier run cut its batches
// elsewhere, is checked event by event and completed. A stream of to that
// holds other events where from's events belong is a conflict: Copy stops
// there rather than interleave two histories.
//
// progress, when not nil, is called after every append with the number of
// events copied so far and the position in from of the last one.
func Copy(ctx context.Context, from, to Store, progress func(copied int64, at Position)) (int64, error) {
	n, err := copyAll(ctx, from, to, progress)
	if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		// The client libraries report an ended context in words of their
		// own; callers tell an interruption from a failure by ctx's error.
		err = fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	return n, err
}

func copyAll(ctx context.Context, from, to Store, progress func(copied int64, at Position)) (int64, error) {
	var (
		copied  int64
		pending []RecordedEvent
		size    int
	)
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		if err := copyBatch(ctx, to, pending); err != nil {
			return err
		}
		copied += int64(len(pending))
		if progress != nil {
			progress(copied, pending[len(pending)-1].Position)
		}
		pending, size = pending[:0], 0
		return nil
	}
	after := Start
	for {
		evs, err := from.ReadAll(ctx, after, copyPage)
		if err != nil {
			return copied, fmt.Errorf("eventstore: copy: read the source after %s: %w", after, err)
		}
		if len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			n := copySize(ev)
			if len(pending) > 0 {
				last := pending[len(pending)-1]
				if ev.StreamID != last.StreamID || ev.Revision != last.Revision+1 ||
					len(pending) == copyMaxEvents || size+n > copyMaxBytes {
					if err := flush(); err != nil {
						return copied, err
					}
				}
			}
			pending = append(pending, ev)
			size += n
		}
		after = evs[len(evs)-1].Position
	}
	return copied, flush()
}

// copyBatch appends events, consecutive revisions of one stream, at their
// own revisions in to.
func copyBatch(ctx context.Context, to Store, batch []RecordedEvent) error {
	stream, first := batch[0].StreamID, batch[0].Revision
	data := make([]EventData, len(batch))
	for i, ev := range batch {
		data[i] = EventData{ID: ev.ID, Type: ev.Type, Data: ev.Data, Metadata: ev.Metadata}
	}
	_, err := to.Append(ctx, stream, expectBefore(first), data...)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrWrongExpectedRevision) && !errors.Is(err, ErrDuplicateEvent) {
		return fmt.Errorf("eventstore: copy %q revisions %d-%d: %w", stream, first, first+uint64(len(batch))-1, err)
	}

	// Either an earlier run wrote a first part of this batch (its batches
	// ended elsewhere, which a log growing between runs causes), or the
	// target holds something else here. Only the ids tell.
	have, rerr := to.ReadStream(ctx, stream, ReadStreamOptions{From: first, Max: len(batch)})
	if rerr != nil {
		return fmt.Errorf("eventstore: copy %q: %w (and reading the target to tell why: %w)", stream, err, rerr)
	}
	matched := 0
	for i, h := range have {
		if h.Revision != first+uint64(i) || h.ID != batch[i].ID {
			return fmt.Errorf("eventstore: copy %q: the target holds event %s at revision %d where the source has %s, so it is not a copy of this log: %w",
				stream, h.ID, h.Revision, batch[i].ID, err)
		}
		matched++
	}
	if matched == 0 {
		return fmt.Errorf("eventstore: copy %q revision %d: %w", stream, first, err)
	}
	if matched == len(batch) {
		return nil
	}
	rest := first + uint64(matched)
	if _, err := to.Append(ctx, stream, expectBefore(rest), data[matched:]...); err != nil {
		return fmt.Errorf("eventstore: copy %q revisions %d-%d: %w", stream, rest, first+uint64(len(batch))-1, err)
	}
	return nil
}

// copySize is about what an event weighs in an append.
func copySize(ev RecordedEvent) int {
	md := ev.Metadata
	return len(ev.Data) + len(ev.Type) + len(md.CorrelationID) + len(md.CausationID) + len(md.Actor) + copyEventFixed
}

// expectBefore is the condition of an append whose first event has
// revision rev.
func expectBefore(rev uint64) ExpectedRevision {
	if rev == 0 {
		return NoStream
	}
	return Exact(rev - 1)
}

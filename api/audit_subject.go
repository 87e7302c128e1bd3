package api

import (
	"bufio"
	"bytes"
	"container/heap"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

// mountSubjects registers what auditors ask about a subject (history
// replay, point-in-time consents, receipts), the user's own receipts, and
// erasure.
func (h *handlers) mountSubjects(user, admin *echo.Group) {
	auditor := h.server.Echo().Group("/v1/audit", h.RequireAuditor)
	auditor.GET("/accounts/:id/events", h.subjectHistory)
	auditor.GET("/accounts/:id/consents", h.accountConsentsAsOf)
	auditor.GET("/accounts/:id/consents/:clientId/receipt", h.auditReceipt)
	auditor.GET("/clients/:clientId/consents", h.clientConsentsAsOf)
	user.GET("/v1/me/consents/:clientId/receipt", h.myReceipt)
	admin.POST("/accounts/:id/erase", h.eraseAccount)
}

var errUnknownSubject = Problem(http.StatusNotFound, "unknown_account", "the ledger holds no event about this account")

// subjectStreams resolves the :id of a route to the streams of its subject.
func (h *handlers) subjectStreams(c echo.Context) (uuid.UUID, []projections.SubjectStream, error) {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return uuid.Nil, nil, errUnknownSubject
	}
	ranges, err := projections.SubjectStreamRanges(c.Request().Context(), h.Pool, id)
	if err != nil {
		return uuid.Nil, nil, err
	}
	if len(ranges) == 0 {
		return uuid.Nil, nil, errUnknownSubject
	}
	return id, ranges, nil
}

// historyBound is one end of a replay: a log position ("commit/prepare",
// as the lines print it) or an instant (RFC 3339, compared with event time).
type historyBound struct {
	pos *eventstore.Position
	at  time.Time
}

func parseBound(name, raw string) (historyBound, error) {
	if raw == "" {
		return historyBound{}, nil
	}
	if c, p, ok := strings.Cut(raw, "/"); ok {
		cv, err1 := strconv.ParseUint(c, 10, 64)
		pv, err2 := strconv.ParseUint(p, 10, 64)
		if err1 == nil && err2 == nil {
			return historyBound{pos: &eventstore.Position{Commit: cv, Prepare: pv}}, nil
		}
	}
	if at, err := time.Parse(time.RFC3339Nano, raw); err == nil {
		return historyBound{at: at}, nil
	}
	return historyBound{}, Problem(http.StatusBadRequest, "invalid_bound",
		name+" must be a log position (commit/prepare, as printed in each line) or an RFC 3339 time")
}

// before reports whether ev comes before a "from" bound; after, whether it
// comes after a "to" bound. Both bounds are inclusive.
func (b historyBound) before(ev *eventstore.RecordedEvent) bool {
	return (b.pos != nil && ev.Position.Less(*b.pos)) || (!b.at.IsZero() && ev.Metadata.OccurredAt.Before(b.at))
}

func (b historyBound) after(ev *eventstore.RecordedEvent) bool {
	return (b.pos != nil && b.pos.Less(ev.Position)) || (!b.at.IsZero() && ev.Metadata.OccurredAt.After(b.at))
}

// historyLine is one line of the NDJSON replay.
type historyLine struct {
	Position eventstore.Position `json:"position"`
	Stream   string              `json:"stream"`
	Revision uint64              `json:"revision"`
	ID       uuid.UUID           `json:"id"`
	Type     string              `json:"type"`
	Time     time.Time           `json:"time"`
	Actor    string              `json:"actor,omitempty"`
	Data     json.RawMessage     `json:"data"`
	// Hash is the event's chain hash (hex), over the stored form: personal
	// data sealed, so erasure leaves it verifiable.
	Hash string `json:"hash,omitempty"`
}

// historyPage is how many events of one stream are held at a time: memory
// is bounded by streams × page, however long the history (most streams of
// a subject, its sessions, hold a handful).
const historyPage = 1000

// subjectHistory streams the subject's whole history, every stream merged
// in log order, as NDJSON. Personal data is shown in clear while the
// subject's key exists and as null after erasure.
func (h *handlers) subjectHistory(c echo.Context) error {
	id, ranges, err := h.subjectStreams(c)
	if err != nil {
		return err
	}
	from, to, err := historyBounds(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	m := &historyMerge{store: h.Store, subject: []byte(id.String())}
	for _, r := range ranges {
		if err := m.add(ctx, r); err != nil {
			return err
		}
	}
	return writeHistory(c, m, from, to, "history of "+id.String())
}

// historyBounds reads the ?from= and ?to= bounds of a replay.
func historyBounds(c echo.Context) (from, to historyBound, err error) {
	if from, err = parseBound("from", c.QueryParam("from")); err != nil {
		return
	}
	to, err = parseBound("to", c.QueryParam("to"))
	return
}

// historySource yields events in log order; nil is the end.
type historySource interface {
	next(ctx context.Context) (*eventstore.RecordedEvent, error)
}

// writeHistory streams the events of src between from and to as NDJSON,
// one historyLine each, with secret digests redacted. It flushes every
// historyPage lines, so memory is what src holds, however long the
// history. what names the history in the error of a log that fails midway.
func writeHistory(c echo.Context, src historySource, from, to historyBound, what string) error {
	ctx := c.Request().Context()
	res := c.Response()
	res.Header().Set(echo.HeaderContentType, "application/x-ndjson")
	res.Header().Set(echo.HeaderCacheControl, "no-store")
	res.WriteHeader(http.StatusOK)
	w := bufio.NewWriterSize(res, 64<<10)
	enc := json.NewEncoder(w)
	n := 0
	for {
		ev, err := src.next(ctx)
		if err != nil {
			// The status is sent: end the body with a line that says why,
			// so a reader never takes a cut history for a whole one.
			_ = enc.Encode(map[string]string{"error": "history interrupted: the event log failed"})
			_ = w.Flush()
			return fmt.Errorf("%s: %w", what, err)
		}
		if ev == nil || to.after(ev) {
			break
		}
		if from.before(ev) {
			continue
		}
		if err := enc.Encode(historyLine{Position: ev.Position, Stream: ev.StreamID, Revision: ev.Revision, ID: ev.ID,
			Type: ev.Type, Time: ev.Metadata.OccurredAt, Actor: ev.Metadata.Actor, Data: withoutSecretDigests(ev.Data), Hash: hex.EncodeToString(ev.Hash)}); err != nil {
			return nil // the client went away
		}
		if n++; n%historyPage == 0 {
			if w.Flush() != nil {
				return nil
			}
			res.Flush()
		}
	}
	if w.Flush() == nil {
		res.Flush()
	}
	return nil
}

// historyMerge merges the subject's streams in log order.
type historyMerge struct {
	store   eventstore.Store
	subject []byte
	heads   cursorHeap
}

type streamCursor struct {
	rng  projections.SubjectStream
	buf  []eventstore.RecordedEvent
	next uint64 // revision of the next page
	done bool
}

// fill reads the cursor's next page, keeping the events of its range that
// concern the subject (in a car's stream, not the other owners' events).
func (m *historyMerge) fill(ctx context.Context, cur *streamCursor) error {
	for len(cur.buf) == 0 && !cur.done {
		evs, err := m.store.ReadStream(ctx, cur.rng.Stream, eventstore.ReadStreamOptions{From: cur.next, Max: historyPage})
		if err != nil {
			return err
		}
		if len(evs) < historyPage {
			cur.done = true
		}
		if len(evs) > 0 {
			cur.next = evs[len(evs)-1].Revision + 1
		}
		for _, ev := range evs {
			if ev.Revision > cur.rng.LastRevision {
				cur.done = true
				break
			}
			if m.othersEvent(ev.Data) {
				continue
			}
			cur.buf = append(cur.buf, ev)
		}
	}
	return nil
}

// othersEvent reports an event that names an account, not the subject.
func (m *historyMerge) othersEvent(data []byte) bool {
	return bytes.Contains(data, []byte(`"accountId"`)) && !bytes.Contains(data, m.subject)
}

func (m *historyMerge) add(ctx context.Context, r projections.SubjectStream) error {
	cur := &streamCursor{rng: r, next: r.FirstRevision}
	if err := m.fill(ctx, cur); err != nil {
		return err
	}
	if len(cur.buf) > 0 {
		heap.Push(&m.heads, cur)
	}
	return nil
}

// next returns the subject's next event in log order, nil at the end.
func (m *historyMerge) next(ctx context.Context) (*eventstore.RecordedEvent, error) {
	if m.heads.Len() == 0 {
		return nil, nil
	}
	cur := m.heads[0]
	ev := cur.buf[0]
	cur.buf = cur.buf[1:]
	if len(cur.buf) == 0 {
		if err := m.fill(ctx, cur); err != nil {
			return nil, err
		}
	}
	if len(cur.buf) == 0 {
		heap.Pop(&m.heads)
	} else {
		heap.Fix(&m.heads, 0)
	}
	return &ev, nil
}

type cursorHeap []*streamCursor

func (h cursorHeap) Len() int           { return len(h) }
func (h cursorHeap) Less(i, j int) bool { return h[i].buf[0].Position.Less(h[j].buf[0].Position) }
func (h cursorHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)        { *h = append(*h, x.(*streamCursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// parseAsOf reads ?asOf= (RFC 3339); absent means now.
func parseAsOf(c echo.Context) (time.Time, error) {
	raw := c.QueryParam("asOf")
	if raw == "" {
		return time.Now(), nil
	}
	at, err := time.Parse(time.RFC3339Nano, raw)
	if err != nil {
		return time.Time{}, Problem(http.StatusBadRequest, "invalid_as_of", "asOf must be an RFC 3339 time, e.g. 2026-03-01T12:00:00Z")
	}
	return at, nil
}

// grantAsOf folds a grant stream up to an instant, by event time: the
// events are in the order they were decided, so the fold stops at the first
// one after the instant.
func (h *handlers) grantAsOf(ctx context.Context, stream string, asOf time.Time) (*consent.GrantRecord, error) {
	var facts []consent.Fact
	var from uint64
read:
	for {
		evs, err := h.Store.ReadStream(ctx, stream, eventstore.ReadStreamOptions{From: from, Max: grantPage})
		if err != nil {
			return nil, err
		}
		for _, ev := range evs {
			if ev.Metadata.OccurredAt.After(asOf) {
				break read
			}
			switch ev.Type {
			case consent.TypeGranted, consent.TypeDenied, consent.TypeRevoked:
				facts = append(facts, consent.Fact{Type: ev.Type, Data: ev.Data, ID: ev.ID, At: ev.Metadata.OccurredAt})
			}
		}
		if len(evs) < grantPage {
			break
		}
		from = evs[len(evs)-1].Revision + 1
	}
	r, err := consent.FoldRecord(facts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", stream, err)
	}
	return r, nil
}

// grantPage is how many events of a grant stream one read brings.
const grantPage = 500

// streamReads bounds the streams one answer reads at once (grant streams
// folded, security streams read): an answer waits for its slowest stream,
// not for the sum of them.
const streamReads = 8

// eachAtOnce runs do(0) … do(n-1), streamReads of them at once, and joins
// their errors.
func eachAtOnce(n int, do func(i int) error) error {
	errs := make([]error, n)
	sem := make(chan struct{}, streamReads)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = do(i)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (h *handlers) grantsAsOf(c echo.Context, streams []string, asOf time.Time) error {
	streams = slices.DeleteFunc(slices.Clone(streams), func(s string) bool { return !strings.HasPrefix(s, "grant-") })
	records := make([]*consent.GrantRecord, len(streams))
	if err := eachAtOnce(len(streams), func(i int) (err error) {
		records[i], err = h.grantAsOf(c.Request().Context(), streams[i], asOf)
		return err
	}); err != nil {
		return err
	}
	out := []*consent.GrantRecord{}
	for _, r := range records {
		if r.Exists() {
			out = append(out, r)
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"asOf": asOf.UTC(), "grants": out})
}

// accountConsentsAsOf answers each of the account's grants as it stood at
// ?asOf=, folded from the log (never from today's read models); a grant
// not yet answered then is not listed.
func (h *handlers) accountConsentsAsOf(c echo.Context) error {
	asOf, err := parseAsOf(c)
	if err != nil {
		return err
	}
	_, ranges, err := h.subjectStreams(c)
	if err != nil {
		return err
	}
	streams := make([]string, len(ranges))
	for i, r := range ranges {
		streams[i] = r.Stream
	}
	return h.grantsAsOf(c, streams, asOf)
}

// clientConsentsAsOf is the same answer for every account that ever
// answered one client.
func (h *handlers) clientConsentsAsOf(c echo.Context) error {
	asOf, err := parseAsOf(c)
	if err != nil {
		return err
	}
	id, err := uuid.Parse(c.Param("clientId"))
	if err != nil {
		return consent.ErrUnknownClient
	}
	streams, err := projections.ClientGrantStreams(c.Request().Context(), h.Pool, id)
	if err != nil {
		return err
	}
	return h.grantsAsOf(c, streams, asOf)
}

// eraseAccount is GDPR erasure by crypto-shredding (see
// commands.EraseAccount). The subject index names the sessions to end and
// the partners whose grants to revoke.
func (h *handlers) eraseAccount(c echo.Context) error {
	id, ranges, err := h.subjectStreams(c)
	if err != nil {
		return err
	}
	cmd := commands.EraseAccount{AccountID: id}
	for _, r := range ranges {
		if rest, ok := strings.CutPrefix(r.Stream, "session-"); ok {
			if sid, err := uuid.Parse(rest); err == nil {
				cmd.Sessions = append(cmd.Sessions, sid)
			}
		}
	}
	if cmd.Clients, err = projections.SubjectClients(c.Request().Context(), h.Pool, id); err != nil {
		return err
	}
	if err := h.Commands.EraseAccount(c.Request().Context(), cmd); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"accountId": id, "status": "erased",
		"sessionsEnded": len(cmd.Sessions), "grantsRevoked": len(cmd.Clients)})
}

// maxTime folds a whole stream.
var maxTime = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)

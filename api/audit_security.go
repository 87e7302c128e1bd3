package api

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

// mountSecurity registers the auditor's view of the brute-force limits that
// have no subject: source addresses limited and partner clients whose
// authentication was locked. The per-subject ones (sign-in locks, PIN
// blocks, burnt codes) are in the subject's own history.
func (h *handlers) mountSecurity(auditor *echo.Group) {
	auditor.GET("/security/events", h.securityHistory)
	auditor.GET("/clients/:clientId/security-events", h.clientSecurityHistory)
}

// securityHistory streams every security.* event, in log order, as NDJSON:
// the same lines and bounds as a subject's history.
func (h *handlers) securityHistory(c echo.Context) error {
	return h.writeSecurityHistory(c, nil, "security history")
}

// clientSecurityHistory is the same for one partner client: its
// authentication locks. A source limit does not name a client (an
// address's budget is drawn by every kind of secret, aimed at any client),
// so it is only in the whole security history.
func (h *handlers) clientSecurityHistory(c echo.Context) error {
	id, err := uuid.Parse(c.Param("clientId"))
	if err != nil {
		return consent.ErrUnknownClient
	}
	return h.writeSecurityHistory(c, &id, "security history of client "+id.String())
}

func (h *handlers) writeSecurityHistory(c echo.Context, client *uuid.UUID, what string) error {
	from, to, err := historyBounds(c)
	if err != nil {
		return err
	}
	f := &securityFeed{store: h.Store, db: h.Pool, q: projections.SecurityQuery{Client: client, Since: from.at, Limit: historyPage}}
	// The first page is read before the status is sent, so a failing
	// index or log is a plain error answer.
	if err := f.fill(c.Request().Context()); err != nil {
		return err
	}
	return writeHistory(c, f, from, to, what)
}

// securityFeed reads security events in log order, a page of the security
// index at a time: memory holds one page, however many sources and clients
// were ever limited.
type securityFeed struct {
	store eventstore.Store
	db    projections.Querier
	q     projections.SecurityQuery
	buf   []eventstore.RecordedEvent
	done  bool
}

func (f *securityFeed) next(ctx context.Context) (*eventstore.RecordedEvent, error) {
	if len(f.buf) == 0 && !f.done {
		if err := f.fill(ctx); err != nil {
			return nil, err
		}
	}
	if len(f.buf) == 0 {
		return nil, nil
	}
	ev := f.buf[0]
	f.buf = f.buf[1:]
	return &ev, nil
}

// fill reads the next page of the index, then its events from the log:
// one read per stream the page names, over the revisions it names there,
// streamReads of them at once.
func (f *securityFeed) fill(ctx context.Context) error {
	refs, err := projections.SecurityEventRefs(ctx, f.db, f.q)
	if err != nil {
		return err
	}
	if len(refs) < f.q.Limit {
		f.done = true
	}
	if len(refs) == 0 {
		return nil
	}
	f.q.After = refs[len(refs)-1].Seq
	type span struct{ first, last uint64 }
	spans := map[string]span{}
	for _, r := range refs {
		s, ok := spans[r.Stream]
		if !ok {
			s = span{r.Revision, r.Revision}
		}
		s.first, s.last = min(s.first, r.Revision), max(s.last, r.Revision)
		spans[r.Stream] = s
	}
	type at struct {
		stream   string
		revision uint64
	}
	streams := slices.Collect(maps.Keys(spans))
	reads := make([][]eventstore.RecordedEvent, len(streams))
	if err := eachAtOnce(len(streams), func(i int) (err error) {
		s := spans[streams[i]]
		reads[i], err = f.store.ReadStream(ctx, streams[i], eventstore.ReadStreamOptions{From: s.first, Max: int(s.last - s.first + 1)})
		return err
	}); err != nil {
		return err
	}
	read := make(map[at]eventstore.RecordedEvent, len(refs))
	for _, evs := range reads {
		for _, ev := range evs {
			read[at{ev.StreamID, ev.Revision}] = ev
		}
	}
	for _, r := range refs {
		ev, ok := read[at{r.Stream, r.Revision}]
		if !ok {
			return fmt.Errorf("security index: %s@%d is not in the log", r.Stream, r.Revision)
		}
		f.buf = append(f.buf, ev)
	}
	return nil
}

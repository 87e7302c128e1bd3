package esdbtest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	api "github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// streamsService implements the Streams gRPC service over a Server.
type streamsService struct {
	api.UnimplementedStreamsServer
	s *Server
}

// errDropped is what DropConnections makes every open call fail with.
var errDropped = status.Error(codes.Unavailable, "esdbtest: connection dropped")

// errTombstoned tells a reader to fail with the stream-deleted trailers.
var errTombstoned = errors.New("esdbtest: stream is tombstoned")

// readBatch bounds how many records a reader copies while holding the lock,
// so a long catch-up does not stall writers.
const readBatch = 128

// expectation is an expected stream revision as the protocol sends it.
type expectation struct {
	kind expectKind
	rev  uint64
}

type expectKind uint8

const (
	expectAny expectKind = iota
	expectNoStream
	expectStreamExists
	expectExact
)

// verdict is the outcome of checking a write against a stream.
type verdict uint8

const (
	verdictWrite verdict = iota
	verdictIdempotent
	verdictWrongVersion
)

// checkLocked applies EventStoreDB's rules for a write of events with ids
// to stream name. With Any or StreamExists a retry is recognised by its ids
// standing anywhere in the stream; with NoStream or an exact revision, by
// its ids standing right after the expected revision. A partial match is a
// conflict. On verdictIdempotent, last is the revision of the last matched
// event. s.mu must be held.
func (s *Server) checkLocked(name string, st *stream, exp expectation, ids []uuid.UUID) (v verdict, last uint64) {
	cur := st.last()
	switch exp.kind {
	case expectStreamExists:
		if cur < 0 || st.softDeleted() {
			return verdictWrongVersion, 0
		}
		fallthrough
	case expectAny:
		if len(ids) == 0 {
			return verdictWrite, 0
		}
		for i, id := range ids {
			ref, ok := s.ids[id]
			if !ok || ref.stream != name {
				if i == 0 {
					return verdictWrite, 0
				}
				return verdictWrongVersion, 0
			}
			last = ref.revision
		}
		return verdictIdempotent, last
	}

	expected := int64(-1)
	if exp.kind == expectExact {
		if exp.rev > math.MaxInt64 {
			return verdictWrongVersion, 0
		}
		expected = int64(exp.rev)
	} else if st.softDeleted() {
		// A soft-deleted stream can be recreated with NoStream; numbering
		// continues after the deleted events.
		return verdictWrite, 0
	}
	switch {
	case expected == cur:
		return verdictWrite, 0
	case expected > cur || len(ids) == 0:
		return verdictWrongVersion, 0
	}
	for i, id := range ids {
		n := expected + 1 + int64(i)
		if n > cur || st.events[n].id != id {
			return verdictWrongVersion, 0
		}
	}
	return verdictIdempotent, uint64(expected + int64(len(ids)))
}

// Append implements the client-streaming append: options first, then the
// proposed events, all written atomically when the client closes its side.
func (h *streamsService) Append(srv api.Streams_AppendServer) error {
	first, err := srv.Recv()
	if err != nil {
		return err
	}
	opts := first.GetOptions()
	if opts == nil {
		return status.Error(codes.InvalidArgument, "esdbtest: append must start with options")
	}
	name := string(opts.GetStreamIdentifier().GetStreamName())
	if name == "" {
		return status.Error(codes.InvalidArgument, "esdbtest: empty stream name")
	}
	exp := expectation{}
	switch o := opts.ExpectedStreamRevision.(type) {
	case *api.AppendReq_Options_Revision:
		exp = expectation{kind: expectExact, rev: o.Revision}
	case *api.AppendReq_Options_NoStream:
		exp.kind = expectNoStream
	case *api.AppendReq_Options_StreamExists:
		exp.kind = expectStreamExists
	}

	var proposed []*record
	for {
		req, err := srv.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		msg := req.GetProposedMessage()
		if msg == nil {
			return status.Error(codes.InvalidArgument, "esdbtest: options sent twice")
		}
		r, err := proposedRecord(name, msg.GetId(), msg.GetMetadata(), msg.GetCustomMetadata(), msg.GetData())
		if err != nil {
			return err
		}
		proposed = append(proposed, r)
	}
	ids := make([]uuid.UUID, len(proposed))
	for i, r := range proposed {
		ids[i] = r.id
	}

	s := h.s
	s.mu.Lock()
	st := s.streams[name]
	if st != nil && st.tombstoned {
		s.mu.Unlock()
		return streamDeleted(srv, name)
	}
	v, last := s.checkLocked(name, st, exp, ids)
	switch v {
	case verdictWrongVersion:
		cur := st.last()
		s.mu.Unlock()
		return srv.SendAndClose(wrongVersion(cur, exp))
	case verdictIdempotent:
		pos := st.events[last].pos
		s.mu.Unlock()
		return srv.SendAndClose(appendSuccess(int64(last), pos))
	}
	if len(proposed) == 0 {
		cur := st.last()
		s.mu.Unlock()
		return srv.SendAndClose(appendSuccess(cur, 0))
	}
	for _, r := range proposed {
		s.appendLocked(r, true)
	}
	lastRec := proposed[len(proposed)-1]
	s.notifyLocked()
	s.mu.Unlock()
	return srv.SendAndClose(appendSuccess(int64(lastRec.revision), lastRec.pos))
}

// proposedRecord validates one proposed event the way the server does:
// the client must send its type and content type as system metadata.
func proposedRecord(name string, id *shared.UUID, md map[string]string, custom, data []byte) (*record, error) {
	eid, err := uuidFromProto(id)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "esdbtest: event id: %v", err)
	}
	typ, ok := md["type"]
	if !ok || typ == "" {
		return nil, status.Error(codes.InvalidArgument, "esdbtest: event without type")
	}
	ct, ok := md["content-type"]
	if !ok {
		return nil, status.Error(codes.InvalidArgument, "esdbtest: event without content-type")
	}
	return &record{
		id:          eid,
		stream:      name,
		eventType:   typ,
		contentType: ct,
		custom:      append([]byte(nil), custom...),
		data:        append([]byte(nil), data...),
	}, nil
}

func appendSuccess(cur int64, pos uint64) *api.AppendResp {
	ok := &api.AppendResp_Success{}
	if cur < 0 {
		ok.CurrentRevisionOption = &api.AppendResp_Success_NoStream{NoStream: &shared.Empty{}}
	} else {
		ok.CurrentRevisionOption = &api.AppendResp_Success_CurrentRevision{CurrentRevision: uint64(cur)}
	}
	if pos == 0 {
		ok.PositionOption = &api.AppendResp_Success_NoPosition{NoPosition: &shared.Empty{}}
	} else {
		ok.PositionOption = &api.AppendResp_Success_Position{Position: &api.AppendResp_Position{CommitPosition: pos, PreparePosition: pos}}
	}
	return &api.AppendResp{Result: &api.AppendResp_Success_{Success: ok}}
}

// wrongVersion fills both the current fields and the ones servers before
// 20.6 used, as EventStoreDB does.
func wrongVersion(cur int64, exp expectation) *api.AppendResp {
	w := &api.AppendResp_WrongExpectedVersion{}
	if cur < 0 {
		w.CurrentRevisionOption = &api.AppendResp_WrongExpectedVersion_CurrentNoStream{CurrentNoStream: &shared.Empty{}}
		w.CurrentRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_NoStream_20_6_0{NoStream_20_6_0: &shared.Empty{}}
	} else {
		w.CurrentRevisionOption = &api.AppendResp_WrongExpectedVersion_CurrentRevision{CurrentRevision: uint64(cur)}
		w.CurrentRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_CurrentRevision_20_6_0{CurrentRevision_20_6_0: uint64(cur)}
	}
	switch exp.kind {
	case expectAny:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedAny{ExpectedAny: &shared.Empty{}}
		w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_Any_20_6_0{Any_20_6_0: &shared.Empty{}}
	case expectNoStream:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedNoStream{ExpectedNoStream: &shared.Empty{}}
		// Servers before 20.6 had no separate field for NoStream.
		w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_ExpectedRevision_20_6_0{ExpectedRevision_20_6_0: math.MaxUint64}
	case expectStreamExists:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedStreamExists{ExpectedStreamExists: &shared.Empty{}}
		w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_StreamExists_20_6_0{StreamExists_20_6_0: &shared.Empty{}}
	default:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedRevision{ExpectedRevision: exp.rev}
		w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_ExpectedRevision_20_6_0{ExpectedRevision_20_6_0: exp.rev}
	}
	return &api.AppendResp{Result: &api.AppendResp_WrongExpectedVersion_{WrongExpectedVersion: w}}
}

// streamDeleted fails a call the way EventStoreDB reports a tombstoned
// stream: the client reads the exception and the stream name from the
// trailers, and indexes the name without checking it is there.
func streamDeleted(st grpc.ServerStream, name string) error {
	st.SetTrailer(metadata.Pairs("exception", "stream-deleted", "stream-name", name))
	return status.Errorf(codes.FailedPrecondition, "esdbtest: stream %q is deleted", name)
}

// wrongVersionError fails a delete or tombstone whose expected revision does
// not hold; those calls have no result message to carry it.
func wrongVersionError(cur int64, exp expectation) error {
	actual := strconv.FormatInt(cur, 10)
	expected := "any"
	switch exp.kind {
	case expectNoStream:
		expected = "-1"
	case expectStreamExists:
		expected = "-4"
	case expectExact:
		expected = strconv.FormatUint(exp.rev, 10)
	}
	return status.Errorf(codes.FailedPrecondition, "esdbtest: wrong expected version: expected %s, actual %s", expected, actual)
}

// Delete soft-deletes a stream: reads stop seeing its events, and writing
// to it again continues its numbering. Like EventStoreDB it records the
// truncation as a $metadata event in the stream's metadata stream.
func (h *streamsService) Delete(ctx context.Context, req *api.DeleteReq) (*api.DeleteResp, error) {
	opts := req.GetOptions()
	name := string(opts.GetStreamIdentifier().GetStreamName())
	exp := expectation{}
	switch o := opts.GetExpectedStreamRevision().(type) {
	case *api.DeleteReq_Options_Revision:
		exp = expectation{kind: expectExact, rev: o.Revision}
	case *api.DeleteReq_Options_NoStream:
		exp.kind = expectNoStream
	case *api.DeleteReq_Options_StreamExists:
		exp.kind = expectStreamExists
	}
	pos, err := h.s.remove(ctx, name, exp, false)
	if err != nil {
		return nil, err
	}
	return &api.DeleteResp{PositionOption: &api.DeleteResp_Position_{Position: &api.DeleteResp_Position{CommitPosition: pos, PreparePosition: pos}}}, nil
}

// Tombstone deletes a stream for good: every later read or write of it
// fails with stream-deleted. A $streamDeleted event marks it in $all.
func (h *streamsService) Tombstone(ctx context.Context, req *api.TombstoneReq) (*api.TombstoneResp, error) {
	opts := req.GetOptions()
	name := string(opts.GetStreamIdentifier().GetStreamName())
	exp := expectation{}
	switch o := opts.GetExpectedStreamRevision().(type) {
	case *api.TombstoneReq_Options_Revision:
		exp = expectation{kind: expectExact, rev: o.Revision}
	case *api.TombstoneReq_Options_NoStream:
		exp.kind = expectNoStream
	case *api.TombstoneReq_Options_StreamExists:
		exp.kind = expectStreamExists
	}
	pos, err := h.s.remove(ctx, name, exp, true)
	if err != nil {
		return nil, err
	}
	return &api.TombstoneResp{PositionOption: &api.TombstoneResp_Position_{Position: &api.TombstoneResp_Position{CommitPosition: pos, PreparePosition: pos}}}, nil
}

// remove soft-deletes or tombstones a stream and returns the position of
// the record that marks it.
func (s *Server) remove(ctx context.Context, name string, exp expectation, tombstone bool) (uint64, error) {
	if name == "" {
		return 0, status.Error(codes.InvalidArgument, "esdbtest: empty stream name")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[name]
	if st != nil && st.tombstoned {
		_ = grpc.SetTrailer(ctx, metadata.Pairs("exception", "stream-deleted", "stream-name", name))
		return 0, status.Errorf(codes.FailedPrecondition, "esdbtest: stream %q is deleted", name)
	}
	if v, _ := s.checkLocked(name, st, exp, nil); v == verdictWrongVersion {
		_ = grpc.SetTrailer(ctx, metadata.Pairs("exception", "wrong-expected-version", "stream-name", name))
		return 0, wrongVersionError(st.last(), exp)
	}
	if st == nil {
		st = &stream{}
		s.streams[name] = st
	}
	var marker *record
	if tombstone {
		st.tombstoned = true
		marker = &record{id: uuid.New(), stream: name, revision: math.MaxInt64, eventType: "$streamDeleted", contentType: "application/octet-stream"}
		s.appendLocked(marker, false)
	} else {
		st.truncateBefore = uint64(len(st.events))
		data, _ := json.Marshal(map[string]uint64{"$tb": st.truncateBefore})
		marker = &record{id: uuid.New(), stream: "$$" + name, eventType: "$metadata", contentType: "application/json", data: data}
		s.appendLocked(marker, true)
	}
	s.notifyLocked()
	return marker.pos, nil
}

// Read serves plain reads (a count) and subscriptions.
func (h *streamsService) Read(req *api.ReadReq, srv api.Streams_ReadServer) error {
	o := req.GetOptions()
	if o == nil {
		return status.Error(codes.InvalidArgument, "esdbtest: read without options")
	}
	f, err := newFilter(o.GetFilter())
	if err != nil {
		return err
	}
	rd := reader{
		s:         h.s,
		srv:       srv,
		stringIDs: o.GetUuidOption().GetString_() != nil,
		filter:    f,
		dropped:   h.s.dropSignal(),
	}
	if _, ok := o.GetCountOption().(*api.ReadReq_Options_Subscription); ok {
		return rd.subscribe(o)
	}
	return rd.read(o)
}

// reader is one open Read call.
type reader struct {
	s         *Server
	srv       api.Streams_ReadServer
	stringIDs bool
	filter    *filter
	dropped   <-chan struct{}
}

// send writes one message unless the connection has been dropped.
func (rd *reader) send(m *api.ReadResp) error {
	select {
	case <-rd.dropped:
		return errDropped
	default:
	}
	return rd.srv.Send(m)
}

func (rd *reader) sendEvent(r *record) error {
	return rd.send(&api.ReadResp{Content: &api.ReadResp_Event{Event: r.proto(rd.stringIDs)}})
}

// read answers a plain read. Only events or stream_not_found may be sent:
// the client panics on anything else in a plain read.
func (rd *reader) read(o *api.ReadReq_Options) error {
	count := o.GetCount()
	backwards := o.GetReadDirection() == api.ReadReq_Options_Backwards
	var (
		out []*record
		err error
	)
	switch so := o.GetStreamOption().(type) {
	case *api.ReadReq_Options_Stream:
		var found bool
		out, found, err = rd.s.readStream(so.Stream, backwards, count)
		if errors.Is(err, errTombstoned) {
			return streamDeleted(rd.srv, string(so.Stream.GetStreamIdentifier().GetStreamName()))
		}
		if err != nil {
			return err
		}
		if !found {
			return rd.send(&api.ReadResp{Content: &api.ReadResp_StreamNotFound_{StreamNotFound: &api.ReadResp_StreamNotFound{
				StreamIdentifier: so.Stream.GetStreamIdentifier(),
			}}})
		}
	case *api.ReadReq_Options_All:
		out = rd.s.readAll(so.All, backwards, count, rd.filter)
	default:
		return status.Error(codes.InvalidArgument, "esdbtest: read without a stream or $all")
	}
	for _, r := range out {
		if err := rd.sendEvent(r); err != nil {
			return err
		}
	}
	return nil
}

// readStream collects up to count visible events of one stream; found is
// false when the stream has none. A tombstoned stream is an error.
func (s *Server) readStream(o *api.ReadReq_Options_StreamOptions, backwards bool, count uint64) (out []*record, found bool, err error) {
	name := string(o.GetStreamIdentifier().GetStreamName())
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[name]
	if st != nil && st.tombstoned {
		return nil, false, errTombstoned
	}
	if !st.visible() {
		return nil, false, nil
	}
	first, last := int64(st.truncateBefore), st.last()
	if !backwards {
		from := first
		switch ro := o.GetRevisionOption().(type) {
		case *api.ReadReq_Options_StreamOptions_End:
			from = last + 1
		case *api.ReadReq_Options_StreamOptions_Revision:
			if ro.Revision > uint64(last) {
				from = last + 1
			} else {
				from = max(first, int64(ro.Revision))
			}
		}
		for n := from; n <= last && uint64(len(out)) < count; n++ {
			out = append(out, st.events[n])
		}
		return out, true, nil
	}
	from := last
	switch ro := o.GetRevisionOption().(type) {
	case *api.ReadReq_Options_StreamOptions_Start:
		from = 0
	case *api.ReadReq_Options_StreamOptions_Revision:
		if ro.Revision < uint64(last) {
			from = int64(ro.Revision)
		}
	}
	for n := from; n >= first && uint64(len(out)) < count; n-- {
		out = append(out, st.events[n])
	}
	return out, true, nil
}

// readAll collects up to count records of $all that pass the filter.
// Forwards, a position is inclusive; backwards, it is exclusive: the records
// before it.
func (s *Server) readAll(o *api.ReadReq_Options_AllOptions, backwards bool, count uint64, f *filter) []*record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*record
	if !backwards {
		from := 0
		switch ao := o.GetAllOption().(type) {
		case *api.ReadReq_Options_AllOptions_End:
			from = len(s.log)
		case *api.ReadReq_Options_AllOptions_Position:
			from = s.searchLocked(ao.Position, false)
		}
		for i := from; i < len(s.log) && uint64(len(out)) < count; i++ {
			if f.match(s.log[i]) {
				out = append(out, s.log[i])
			}
		}
		return out
	}
	from := len(s.log) - 1
	switch ao := o.GetAllOption().(type) {
	case *api.ReadReq_Options_AllOptions_Start:
		from = -1
	case *api.ReadReq_Options_AllOptions_Position:
		from = s.searchLocked(ao.Position, false) - 1
	}
	for i := from; i >= 0 && uint64(len(out)) < count; i-- {
		if f.match(s.log[i]) {
			out = append(out, s.log[i])
		}
	}
	return out
}

// searchLocked is the index of the first record at or (when after is set)
// strictly after position p. s.mu must be held.
func (s *Server) searchLocked(p *api.ReadReq_Options_Position, after bool) int {
	c, pr := p.GetCommitPosition(), p.GetPreparePosition()
	return sort.Search(len(s.log), func(i int) bool {
		pos := s.log[i].pos
		if pos != c {
			return pos > c
		}
		if after {
			return pos > pr
		}
		return pos >= pr
	})
}

// subscribe runs a catch-up subscription: a confirmation, the history after
// the starting point, caught_up, then live events until the client leaves,
// the connection is dropped or the server stops. A filtered subscription
// also sends checkpoints, as EventStoreDB does, so that a client can tell
// progress through a long run of filtered-out records.
func (rd *reader) subscribe(o *api.ReadReq_Options) error {
	s := rd.s
	ctx := rd.srv.Context()

	var (
		all    bool
		name   string
		cursor int // index into s.log, or the next stream revision
	)
	s.mu.Lock()
	switch so := o.GetStreamOption().(type) {
	case *api.ReadReq_Options_All:
		all = true
		switch ao := so.All.GetAllOption().(type) {
		case *api.ReadReq_Options_AllOptions_Start:
			cursor = 0
		case *api.ReadReq_Options_AllOptions_Position:
			cursor = s.searchLocked(ao.Position, true)
		default: // End, or no starting point at all
			cursor = len(s.log)
		}
	case *api.ReadReq_Options_Stream:
		name = string(so.Stream.GetStreamIdentifier().GetStreamName())
		st := s.streams[name]
		if st != nil && st.tombstoned {
			s.mu.Unlock()
			return streamDeleted(rd.srv, name)
		}
		switch ro := so.Stream.GetRevisionOption().(type) {
		case *api.ReadReq_Options_StreamOptions_Start:
			cursor = 0
		case *api.ReadReq_Options_StreamOptions_Revision:
			cursor = int(min(ro.Revision, math.MaxInt32)) + 1
		default:
			cursor = int(st.last() + 1)
		}
	default:
		s.mu.Unlock()
		return status.Error(codes.InvalidArgument, "esdbtest: subscription without a stream or $all")
	}
	s.subs++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.subs--
		s.mu.Unlock()
	}()

	if err := rd.send(&api.ReadResp{Content: &api.ReadResp_Confirmation{Confirmation: &api.ReadResp_SubscriptionConfirmation{
		SubscriptionId: uuid.NewString(),
	}}}); err != nil {
		return err
	}

	interval := rd.filter.checkpointInterval()
	var (
		caughtUp bool
		scanned  int    // records looked at since the last checkpoint
		lastSeen uint64 // position of the last record looked at
	)
	for {
		s.mu.Lock()
		var batch []*record
		if all {
			end := min(len(s.log), cursor+readBatch)
			batch = append(batch, s.log[cursor:end]...)
			cursor = end
		} else {
			st := s.streams[name]
			if st != nil && st.tombstoned {
				s.mu.Unlock()
				return streamDeleted(rd.srv, name)
			}
			if st != nil {
				cursor = max(cursor, int(st.truncateBefore))
				end := min(len(st.events), cursor+readBatch)
				if cursor < end {
					batch = append(batch, st.events[cursor:end]...)
					cursor = end
				}
			}
		}
		wake := s.changed
		s.mu.Unlock()

		for _, r := range batch {
			lastSeen = r.pos
			if rd.filter.match(r) {
				if err := rd.sendEvent(r); err != nil {
					return err
				}
			}
			if rd.filter != nil {
				if scanned++; scanned >= interval {
					scanned = 0
					if err := rd.checkpoint(lastSeen); err != nil {
						return err
					}
				}
			}
		}
		if len(batch) > 0 {
			continue
		}
		if !caughtUp {
			caughtUp = true
			if rd.filter != nil && scanned > 0 {
				scanned = 0
				if err := rd.checkpoint(lastSeen); err != nil {
					return err
				}
			}
			if err := rd.send(&api.ReadResp{Content: &api.ReadResp_CaughtUp_{CaughtUp: &api.ReadResp_CaughtUp{}}}); err != nil {
				return err
			}
		}
		select {
		case <-wake:
		case <-rd.dropped:
			return errDropped
		case <-s.quit:
			return errDropped
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

func (rd *reader) checkpoint(pos uint64) error {
	return rd.send(&api.ReadResp{Content: &api.ReadResp_Checkpoint_{Checkpoint: &api.ReadResp_Checkpoint{
		CommitPosition: pos, PreparePosition: pos,
	}}})
}

// filter is a server-side filter on $all: by stream name or by event type,
// with prefixes or a regular expression.
type filter struct {
	onType   bool
	prefixes []string
	re       *regexp.Regexp
	window   uint32
	mult     uint32
}

func newFilter(o *api.ReadReq_Options_FilterOptions) (*filter, error) {
	if o == nil {
		return nil, nil
	}
	f := &filter{window: 32, mult: max(o.GetCheckpointIntervalMultiplier(), 1)}
	if w, ok := o.GetWindow().(*api.ReadReq_Options_FilterOptions_Max); ok && w.Max > 0 {
		f.window = w.Max
	}
	var expr *api.ReadReq_Options_FilterOptions_Expression
	switch fo := o.GetFilter().(type) {
	case *api.ReadReq_Options_FilterOptions_StreamIdentifier:
		expr = fo.StreamIdentifier
	case *api.ReadReq_Options_FilterOptions_EventType:
		f.onType = true
		expr = fo.EventType
	default:
		return nil, status.Error(codes.InvalidArgument, "esdbtest: filter without an expression")
	}
	f.prefixes = expr.GetPrefix()
	if rx := expr.GetRegex(); rx != "" {
		re, err := regexp.Compile(rx)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "esdbtest: filter regex: %v", err)
		}
		f.re = re
	}
	return f, nil
}

func (f *filter) match(r *record) bool {
	if f == nil {
		return true
	}
	subject := r.stream
	if f.onType {
		subject = r.eventType
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(subject, p) {
			return true
		}
	}
	if f.re != nil {
		return f.re.MatchString(subject)
	}
	return false
}

func (f *filter) checkpointInterval() int {
	if f == nil {
		return math.MaxInt
	}
	return int(f.window) * int(f.mult)
}

// proto renders a record as the client expects it. The client requires the
// type, content-type and created system metadata: it exits the process when
// created does not parse.
func (r *record) proto(stringIDs bool) *api.ReadResp_ReadEvent {
	id := &shared.UUID{}
	if stringIDs {
		id.Value = &shared.UUID_String_{String_: r.id.String()}
	} else {
		id.Value = &shared.UUID_Structured_{Structured: &shared.UUID_Structured{
			MostSignificantBits:  int64(binary.BigEndian.Uint64(r.id[:8])),
			LeastSignificantBits: int64(binary.BigEndian.Uint64(r.id[8:])),
		}}
	}
	return &api.ReadResp_ReadEvent{
		Event: &api.ReadResp_ReadEvent_RecordedEvent{
			Id:               id,
			StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(r.stream)},
			StreamRevision:   r.revision,
			CommitPosition:   r.pos,
			PreparePosition:  r.pos,
			Metadata: map[string]string{
				"type":         r.eventType,
				"content-type": r.contentType,
				"created":      strconv.FormatInt(r.created, 10),
			},
			CustomMetadata: r.custom,
			Data:           r.data,
		},
		Position: &api.ReadResp_ReadEvent_CommitPosition{CommitPosition: r.pos},
	}
}

func uuidFromProto(id *shared.UUID) (uuid.UUID, error) {
	switch v := id.GetValue().(type) {
	case *shared.UUID_Structured_:
		var u uuid.UUID
		binary.BigEndian.PutUint64(u[:8], uint64(v.Structured.GetMostSignificantBits()))
		binary.BigEndian.PutUint64(u[8:], uint64(v.Structured.GetLeastSignificantBits()))
		return u, nil
	case *shared.UUID_String_:
		return uuid.Parse(v.String_)
	default:
		return uuid.Nil, errors.New("missing")
	}
}

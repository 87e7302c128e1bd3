// Package esdbtest runs an in-process stand-in for EventStoreDB in tests.
//
// The server speaks the Streams gRPC service of the official Go client, so
// an adapter is exercised through the real client and its wire format rather
// than through a mock of the client's API. Streams live in memory; nothing is
// persisted. Only the parts of EventStoreDB the ledger relies on are
// implemented: appends with expected revisions and idempotent retries, reads
// of streams and $all in both directions, catch-up subscriptions (optionally
// filtered), soft delete and tombstones. Positions are a single counter:
// every record gets commit == prepare == the next value, starting at 1, so
// the zero position always sorts before the first event.
package esdbtest

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	api "github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Server is one in-memory EventStoreDB node listening on a loopback port.
type Server struct {
	addr string
	gs   *grpc.Server

	mu      sync.Mutex
	log     []*record          // $all in position order
	streams map[string]*stream // by stream name
	ids     map[uuid.UUID]eventRef
	lastPos uint64
	changed chan struct{} // closed and replaced after every write
	dropped chan struct{} // closed and replaced by DropConnections
	subs    int           // open subscription RPCs
	drops   int           // DropConnections calls

	closeOnce sync.Once
	quit      chan struct{}
}

// Start starts a server on 127.0.0.1 with an ephemeral port and stops it
// when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := Serve()
	if err != nil {
		t.Fatalf("esdbtest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Serve starts a server on 127.0.0.1 with an ephemeral port; the caller
// stops it with Close. It is Start for programs that have no test to tie the
// server's life to, such as the benchmark, which measures the adapter over
// this server.
func Serve() (*Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	s := &Server{
		addr:    lis.Addr().String(),
		streams: make(map[string]*stream),
		ids:     make(map[uuid.UUID]eventRef),
		changed: make(chan struct{}),
		dropped: make(chan struct{}),
		quit:    make(chan struct{}),
	}
	// The client pings every ten seconds even without open calls; grpc-go's
	// default policy would answer that with GOAWAY, which EventStoreDB never
	// does.
	s.gs = grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
		MinTime:             time.Second,
		PermitWithoutStream: true,
	}))
	api.RegisterStreamsServer(s.gs, &streamsService{s: s})
	go func() { _ = s.gs.Serve(lis) }()
	return s, nil
}

// URL is the connection string for the client: plaintext, single node. The
// server does not implement gossip or server features; the client treats
// their Unimplemented answers as an older single node.
func (s *Server) URL() string {
	return fmt.Sprintf("esdb://%s?tls=false", s.addr)
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

// DropConnections abruptly ends every read and subscription call that is
// open now with codes.Unavailable, as a node restart or a network failure
// would. The connections themselves stay usable, so a client that retries
// reaches the same data. Calls opened afterwards are not affected.
func (s *Server) DropConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.dropped)
	s.dropped = make(chan struct{})
	s.drops++
}

// Subscriptions is the number of subscription calls open now. Tests wait on
// it to know that a client has (re)subscribed.
func (s *Server) Subscriptions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subs
}

// Head is the position of the newest record in $all, 0 when it is empty.
func (s *Server) Head() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastPos
}

// Close stops the server and ends every open call. It is safe to call more
// than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.quit)
		s.gs.Stop()
	})
}

// dropSignal returns the channel that the next DropConnections closes.
func (s *Server) dropSignal() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// record is one event in the log.
type record struct {
	id          uuid.UUID
	stream      string
	revision    uint64
	pos         uint64
	created     int64 // .NET ticks (100 ns) since the Unix epoch
	eventType   string
	contentType string
	custom      []byte
	data        []byte
}

// eventRef locates an event id for the idempotency check.
type eventRef struct {
	stream   string
	revision uint64
}

// stream is the state of one stream. events[i] has revision i.
type stream struct {
	events []*record
	// truncateBefore hides the revisions below it; a soft delete sets it to
	// the stream's length, so numbering continues when the stream is written
	// again.
	truncateBefore uint64
	tombstoned     bool
}

// last is the revision of the stream's last event, -1 when it has none.
func (st *stream) last() int64 {
	if st == nil {
		return -1
	}
	return int64(len(st.events)) - 1
}

// visible reports whether reads see the stream: it has events that are not
// deleted.
func (st *stream) visible() bool {
	return st != nil && !st.tombstoned && uint64(len(st.events)) > st.truncateBefore
}

// softDeleted reports whether the stream had events and all of them are
// hidden by a soft delete.
func (st *stream) softDeleted() bool {
	return st != nil && !st.tombstoned && len(st.events) > 0 && uint64(len(st.events)) <= st.truncateBefore
}

// appendLocked writes one record at the end of the log and of its stream
// (unless revision is given explicitly, as for a tombstone) and wakes the
// subscriptions. s.mu must be held.
func (s *Server) appendLocked(r *record, intoStream bool) {
	s.lastPos++
	r.pos = s.lastPos
	r.created = time.Now().UnixNano() / 100
	if intoStream {
		st := s.streams[r.stream]
		if st == nil {
			st = &stream{}
			s.streams[r.stream] = st
		}
		r.revision = uint64(len(st.events))
		st.events = append(st.events, r)
		s.ids[r.id] = eventRef{stream: r.stream, revision: r.revision}
	}
	s.log = append(s.log, r)
}

// notifyLocked wakes every subscription waiting for new records. s.mu must
// be held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

package eventstore

import (
	"crypto/sha256"
	"encoding/binary"
	"time"

	"github.com/google/uuid"
)

// The tamper-evident chain. Every event carries Hash, computed at append
// over a canonical encoding of the event and the hash of the event before
// it in its stream (PrevHash; empty for revision 0), so changing, removing
// or reordering any stored event breaks every hash after it in its stream.
//
// Encoding, version 1. lp(x) is x's length as 4 bytes big endian, then x;
// strings are their UTF-8 bytes; u64 is 8 bytes big endian:
//
//	hash = SHA-256(
//	    lp("ledger-chain-v1")
//	    lp(prev hash)               empty for revision 0
//	    lp(stream id)
//	    u64(revision)
//	    lp(event id)                the UUID's 16 bytes
//	    lp(type)
//	    lp(SHA-256(data))           data as the log stores and returns it
//	    lp(SHA-256(
//	        lp(correlationId) lp(causationId) lp(actor) lp(occurredAt))))
//
// occurredAt is the RFC 3339 text the metadata holds (Go's time.RFC3339Nano
// as written by json.Marshal; absent, the zero time 0001-01-01T00:00:00Z);
// other absent fields are empty strings. Data is
// hashed as stored: the PostgreSQL log stores JSON as jsonb, whose text is
// normalised (key order, spacing), so it hashes that text, computed inside
// the append statement (migrations/0013_audit_chain.sql implements this
// encoding in SQL); EventStoreDB stores the bytes appended. Both return the
// bytes they hashed, so a reader recomputes the hash from what it read.
//
// The log as a whole is folded into a rolling hash in log order,
// rolling(n) = SHA-256(rolling(n-1) || hash(n)) with rolling(0) empty,
// which signed checkpoints cover (see CheckpointMessage).
const chainVersion = "ledger-chain-v1"

// HashEvent computes an event's chain hash from its fields and the hash of
// the event before it in its stream (nil for the first).
func HashEvent(prev []byte, stream string, revision uint64, id uuid.UUID, eventType string, data []byte, m Metadata) []byte {
	dataSum := sha256.Sum256(data)
	metaSum := metadataHash(m)
	var b []byte
	b = lp(b, []byte(chainVersion))
	b = lp(b, prev)
	b = lp(b, []byte(stream))
	b = binary.BigEndian.AppendUint64(b, revision)
	b = lp(b, id[:])
	b = lp(b, []byte(eventType))
	b = lp(b, dataSum[:])
	b = lp(b, metaSum[:])
	sum := sha256.Sum256(b)
	return sum[:]
}

// The parts of the encoding the PostgreSQL append passes to its statement.
var chainHead = lp(nil, []byte(chainVersion))

func chainIDType(id uuid.UUID, eventType string) []byte {
	return lp(lp(nil, id[:]), []byte(eventType))
}

func chainMetadata(m Metadata) []byte {
	sum := metadataHash(m)
	return lp(nil, sum[:])
}

// Rehash recomputes e's hash from its fields and its stored PrevHash.
func (e RecordedEvent) Rehash() []byte {
	return HashEvent(e.PrevHash, e.StreamID, e.Revision, e.ID, e.Type, e.Data, e.Metadata)
}

func metadataHash(m Metadata) [32]byte {
	var b []byte
	b = lp(b, []byte(m.CorrelationID))
	b = lp(b, []byte(m.CausationID))
	b = lp(b, []byte(m.Actor))
	b = lp(b, []byte(occurredAtText(m.OccurredAt)))
	return sha256.Sum256(b)
}

// occurredAtText is the text json.Marshal writes for t.
func occurredAtText(t time.Time) string { return t.Format(time.RFC3339Nano) }

func lp(b, field []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(field)))
	return append(b, field...)
}

// Roll folds one event's hash into the rolling hash of the log.
func Roll(rolling, hash []byte) []byte {
	h := sha256.New()
	h.Write(rolling)
	h.Write(hash)
	return h.Sum(nil)
}

// CheckpointMessage is what a checkpoint's Ed25519 signature covers:
//
//	lp("ledger-checkpoint-v1") u64(commit) u64(prepare) u64(count)
//	lp(rolling hash) lp(RFC 3339 time of the last event, UTC)
//
// count is the number of events in the log up to and including position.
func CheckpointMessage(pos Position, count uint64, rolling []byte, lastEventAt time.Time) []byte {
	var b []byte
	b = lp(b, []byte("ledger-checkpoint-v1"))
	b = binary.BigEndian.AppendUint64(b, pos.Commit)
	b = binary.BigEndian.AppendUint64(b, pos.Prepare)
	b = binary.BigEndian.AppendUint64(b, count)
	b = lp(b, rolling)
	b = lp(b, []byte(lastEventAt.UTC().Format(time.RFC3339Nano)))
	return b
}

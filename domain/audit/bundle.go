package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/eventstore"
)

// BundleFormat names the offline audit bundle, version 1: NDJSON, one
// object per line, each with a "kind", in this order:
//
//	header      format, account, streams, export time
//	log         the chain hashes of the whole log, in log order, from the
//	            first event to the checkpoint (chunks of up to 1000; no data)
//	event       each event of the subject's streams the checkpoint covers:
//	            its place in the log (logIndex, 1-based), stream, revision,
//	            id, type, data exactly as stored (a JSON text in a string),
//	            metadata, prevHash, hash
//	checkpoint  the newest signed checkpoint of the ledger
//	seal        an Ed25519 signature, by the checkpoint's key, over the
//	            SHA-256 of every byte before the seal line
//
// Verify recomputes every event's hash and the links of each stream from
// revision 0, finds each event's hash at its place in the log, folds the
// log into the checkpoint's rolling hash, and checks both signatures: a
// change of any byte fails one of them.
const BundleFormat = "ledger-audit-bundle-v1"

// MaxBundleLine bounds one line of a bundle (an event's data, a chunk of
// hashes), so a hostile file cannot make the reader allocate without end.
const MaxBundleLine = 8 << 20

// logChunk is how many hashes one log line holds.
const logChunk = 1000

// BundleHeader is the first line.
type BundleHeader struct {
	Format     string    `json:"format"`
	AccountID  uuid.UUID `json:"accountId"`
	Streams    []string  `json:"streams"`
	ExportedAt time.Time `json:"exportedAt"`
}

// BundleEvent is one event of the subject, as the log stores it.
type BundleEvent struct {
	LogIndex uint64              `json:"logIndex"`
	Position eventstore.Position `json:"position"`
	Stream   string              `json:"stream"`
	Revision uint64              `json:"revision"`
	ID       uuid.UUID           `json:"id"`
	Type     string              `json:"type"`
	// Data is the event's data exactly as stored (a JSON text): kept in a
	// string because JSON encoders re-space embedded JSON.
	Data     string              `json:"data"`
	Metadata eventstore.Metadata `json:"metadata"`
	PrevHash []byte              `json:"prevHash"`
	Hash     []byte              `json:"hash"`
}

// BundleCheckpoint is a signed checkpoint of the ledger.
type BundleCheckpoint struct {
	Position    eventstore.Position `json:"position"`
	Count       uint64              `json:"count"`
	RollingHash []byte              `json:"rollingHash"`
	LastEventAt time.Time           `json:"lastEventAt"`
	PublicKey   []byte              `json:"publicKey"`
	Signature   []byte              `json:"signature"`
}

// Bundle is a bundle as read. Reading checks only its shape; Verify checks
// that it proves what it says.
type Bundle struct {
	Header     BundleHeader
	LogHashes  [][]byte
	Events     []BundleEvent
	Checkpoint BundleCheckpoint
	// Seal is the signature of the seal line; sealed is the SHA-256 of the
	// bytes before it.
	Seal   []byte
	sealed []byte
}

type bundleLine struct {
	Kind string `json:"kind"`
}

type logLine struct {
	Kind   string   `json:"kind"`
	Hashes [][]byte `json:"hashes"`
}

type sealLine struct {
	Kind      string `json:"kind"`
	Signature []byte `json:"signature"`
}

// ErrBundle is the error of every bundle that cannot be read or does not
// verify; the message says what failed.
var ErrBundle = errors.New("audit bundle")

func bundleErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBundle, fmt.Sprintf(format, args...))
}

// ReadBundle parses a bundle: one line per object in the order of
// BundleFormat, nothing after the seal. It checks the shape only.
func ReadBundle(r io.Reader) (*Bundle, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	digest := sha256.New()
	b := &Bundle{}
	stage := 0 // 0 header, 1 log, 2 events, 3 checkpoint read, 4 sealed
	for n := 1; ; n++ {
		line, err := readLine(br)
		if errors.Is(err, io.EOF) && line == nil {
			break
		}
		if err != nil {
			return nil, err
		}
		if stage == 4 {
			return nil, bundleErr("line %d: data after the seal", n)
		}
		var kind bundleLine
		if err := json.Unmarshal(line, &kind); err != nil {
			return nil, bundleErr("line %d: %v", n, err)
		}
		if kind.Kind != "seal" {
			digest.Write(line)
			digest.Write([]byte{'\n'})
		}
		switch {
		case kind.Kind == "header" && stage == 0:
			if err := strictUnmarshal(line, &struct {
				Kind string `json:"kind"`
				*BundleHeader
			}{BundleHeader: &b.Header}); err != nil {
				return nil, bundleErr("line %d (header): %v", n, err)
			}
			if b.Header.Format != BundleFormat {
				return nil, bundleErr("format %q, want %q", b.Header.Format, BundleFormat)
			}
			stage = 1
		case kind.Kind == "log" && stage == 1:
			var l logLine
			if err := strictUnmarshal(line, &l); err != nil {
				return nil, bundleErr("line %d (log): %v", n, err)
			}
			if len(l.Hashes) == 0 || len(l.Hashes) > logChunk {
				return nil, bundleErr("line %d (log): %d hashes, want 1 to %d", n, len(l.Hashes), logChunk)
			}
			b.LogHashes = append(b.LogHashes, l.Hashes...)
		case kind.Kind == "event" && (stage == 1 || stage == 2):
			var e BundleEvent
			if err := strictUnmarshal(line, &struct {
				Kind string `json:"kind"`
				*BundleEvent
			}{BundleEvent: &e}); err != nil {
				return nil, bundleErr("line %d (event): %v", n, err)
			}
			b.Events = append(b.Events, e)
			stage = 2
		case kind.Kind == "checkpoint" && (stage == 1 || stage == 2):
			if err := strictUnmarshal(line, &struct {
				Kind string `json:"kind"`
				*BundleCheckpoint
			}{BundleCheckpoint: &b.Checkpoint}); err != nil {
				return nil, bundleErr("line %d (checkpoint): %v", n, err)
			}
			stage = 3
		case kind.Kind == "seal" && stage == 3:
			var s sealLine
			if err := strictUnmarshal(line, &s); err != nil {
				return nil, bundleErr("line %d (seal): %v", n, err)
			}
			// The seal line is the one line no signature covers: it must be
			// exactly as written (base64 tolerates stray padding bits).
			if again, _ := json.Marshal(s); !bytes.Equal(again, line) {
				return nil, bundleErr("line %d (seal): not in its canonical form", n)
			}
			b.Seal, b.sealed = s.Signature, digest.Sum(nil)
			stage = 4
		default:
			return nil, bundleErr("line %d: unexpected %q", n, kind.Kind)
		}
	}
	if stage != 4 {
		return nil, bundleErr("incomplete: no seal")
	}
	return b, nil
}

// readLine reads one line without its newline; a last line without one is
// refused, so a truncated file never reads as whole.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxBundleLine {
			return nil, bundleErr("a line is longer than %d bytes", MaxBundleLine)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) == 0:
			return nil, io.EOF
		case errors.Is(err, io.EOF):
			return nil, bundleErr("the last line has no newline")
		default:
			return nil, fmt.Errorf("read bundle: %w", err)
		}
	}
}

// strictUnmarshal refuses unknown fields and trailing data, so that no
// byte of a line can change without changing what it says.
func strictUnmarshal(line []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// Verify checks everything the bundle claims. trusted, when set, is the
// public key the auditor holds for the ledger; the bundle's own key must
// be it. It returns nil only when every check passes.
func (b *Bundle) Verify(trusted ed25519.PublicKey) error {
	cp := b.Checkpoint
	if len(cp.PublicKey) != ed25519.PublicKeySize {
		return bundleErr("checkpoint: public key of %d bytes", len(cp.PublicKey))
	}
	pub := ed25519.PublicKey(cp.PublicKey)
	if trusted != nil && !pub.Equal(trusted) {
		return bundleErr("signed by another key than the one trusted")
	}
	if len(b.Seal) != ed25519.SignatureSize || !ed25519.Verify(pub, b.sealed, b.Seal) {
		return bundleErr("the seal does not verify: the file was changed")
	}
	msg := eventstore.CheckpointMessage(cp.Position, cp.Count, cp.RollingHash, cp.LastEventAt)
	if len(cp.Signature) != ed25519.SignatureSize || !ed25519.Verify(pub, msg, cp.Signature) {
		return bundleErr("the checkpoint's signature does not verify")
	}
	if uint64(len(b.LogHashes)) != cp.Count {
		return bundleErr("%d log hashes, the checkpoint covers %d", len(b.LogHashes), cp.Count)
	}
	var rolling []byte
	for _, h := range b.LogHashes {
		rolling = eventstore.Roll(rolling, h)
	}
	if !bytes.Equal(rolling, cp.RollingHash) {
		return bundleErr("the log hashes do not fold into the checkpoint's rolling hash")
	}
	return b.verifyEvents()
}

// verifyEvents checks the subject's streams: each from revision 0 without
// gaps, each event rehashing to its hash and linked to the one before, and
// standing at its place in the log, in log order.
func (b *Bundle) verifyEvents() error {
	want := map[string]bool{}
	for _, s := range b.Header.Streams {
		want[s] = true
	}
	type tail struct {
		revision uint64
		hash     []byte
	}
	tails := map[string]tail{}
	var lastIndex uint64
	for i, e := range b.Events {
		if !want[e.Stream] {
			return bundleErr("event %d: stream %q is not in the header", i, e.Stream)
		}
		if e.LogIndex <= lastIndex || e.LogIndex > uint64(len(b.LogHashes)) {
			return bundleErr("event %d: log index %d out of order or past the checkpoint", i, e.LogIndex)
		}
		lastIndex = e.LogIndex
		t, seen := tails[e.Stream]
		switch {
		case !seen && e.Revision != 0, seen && e.Revision != t.revision+1:
			return bundleErr("event %d: %s revision %d does not follow", i, e.Stream, e.Revision)
		case !bytes.Equal(e.PrevHash, t.hash):
			return bundleErr("event %d: %s@%d does not link to the event before it", i, e.Stream, e.Revision)
		}
		h := eventstore.HashEvent(e.PrevHash, e.Stream, e.Revision, e.ID, e.Type, []byte(e.Data), e.Metadata)
		if !bytes.Equal(h, e.Hash) {
			return bundleErr("event %d: %s@%d does not hash to its hash: it was changed", i, e.Stream, e.Revision)
		}
		if !bytes.Equal(b.LogHashes[e.LogIndex-1], e.Hash) {
			return bundleErr("event %d: %s@%d is not in the log at index %d", i, e.Stream, e.Revision, e.LogIndex)
		}
		tails[e.Stream] = tail{revision: e.Revision, hash: e.Hash}
	}
	return nil
}

// BundleWriter writes a bundle line by line, keeping the digest the seal
// signs. Call Header, Log (any number of times), Event (in log order),
// Checkpoint, then Seal.
type BundleWriter struct {
	w      io.Writer
	digest hash.Hash
	log    [][]byte
	err    error
}

// NewBundleWriter writes to w.
func NewBundleWriter(w io.Writer) *BundleWriter { return &BundleWriter{w: w, digest: sha256.New()} }

func (bw *BundleWriter) line(v any, sealed bool) {
	if bw.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		bw.err = err
		return
	}
	b = append(b, '\n')
	if !sealed {
		bw.digest.Write(b)
	}
	_, bw.err = bw.w.Write(b)
}

// Header writes the first line.
func (bw *BundleWriter) Header(h BundleHeader) {
	h.Format = BundleFormat
	bw.line(struct {
		Kind string `json:"kind"`
		BundleHeader
	}{"header", h}, false)
}

// Log adds one hash of the log, in log order.
func (bw *BundleWriter) Log(hash []byte) {
	bw.log = append(bw.log, hash)
	if len(bw.log) == logChunk {
		bw.flushLog()
	}
}

func (bw *BundleWriter) flushLog() {
	if len(bw.log) > 0 {
		bw.line(logLine{Kind: "log", Hashes: bw.log}, false)
		bw.log = nil
	}
}

// Event writes one event of the subject.
func (bw *BundleWriter) Event(e BundleEvent) {
	bw.flushLog()
	bw.line(struct {
		Kind string `json:"kind"`
		BundleEvent
	}{"event", e}, false)
}

// Checkpoint writes the checkpoint.
func (bw *BundleWriter) Checkpoint(c BundleCheckpoint) {
	bw.flushLog()
	bw.line(struct {
		Kind string `json:"kind"`
		BundleCheckpoint
	}{"checkpoint", c}, false)
}

// Seal signs everything written and writes the seal line.
func (bw *BundleWriter) Seal(key ed25519.PrivateKey) error {
	bw.flushLog()
	bw.line(sealLine{Kind: "seal", Signature: ed25519.Sign(key, bw.digest.Sum(nil))}, true)
	return bw.err
}

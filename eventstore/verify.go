package eventstore

import (
	"bytes"
	"context"
	"fmt"
)

// ChainReport is what a verification of the chain found. FirstInvalid is
// the position of the first event (or checkpoint) that does not verify;
// Stream, Revision and Reason say which and why.
type ChainReport struct {
	Valid        bool      `json:"valid"`
	Checked      uint64    `json:"checked"`
	FirstInvalid *Position `json:"firstInvalidPosition"`
	Stream       string    `json:"stream,omitempty"`
	Revision     *uint64   `json:"revision,omitempty"`
	Reason       string    `json:"reason,omitempty"`
	// Checkpoints is how many checkpoints the rolling hash was compared
	// against (whole-log verification only).
	Checkpoints int `json:"checkpoints"`
}

// Reasons an event fails verification.
const (
	ReasonHash       = "hash"       // the event does not hash to its stored hash: it was changed
	ReasonLink       = "link"       // its previous hash is not the hash of the event before it
	ReasonGap        = "gap"        // a revision is missing or repeated: an event was removed or added
	ReasonUnchained  = "unchained"  // the event carries no hash: it was not written by an append
	ReasonCheckpoint = "checkpoint" // the log up to a checkpoint does not fold into its rolling hash
)

// ChainVerifier checks events fed to it stream by stream in revision order
// (log order does that too): each must rehash to its stored hash, link to
// the hash of the event before it, and follow it without a gap. It also
// folds everything fed into the log's rolling hash, for checkpoints.
type ChainVerifier struct {
	tails   map[string]chainTail
	report  ChainReport
	count   uint64
	rolling []byte
	last    Position
}

type chainTail struct {
	revision uint64
	hash     []byte
}

// NewChainVerifier starts a verification.
func NewChainVerifier() *ChainVerifier {
	return &ChainVerifier{tails: map[string]chainTail{}, report: ChainReport{Valid: true}}
}

// Add checks one event. It returns false once anything failed: the report
// keeps the first failure, later events are not checked.
func (v *ChainVerifier) Add(e RecordedEvent) bool {
	if !v.report.Valid {
		return false
	}
	v.count++
	v.rolling = Roll(v.rolling, e.Hash)
	v.last = e.Position
	tail, seen := v.tails[e.StreamID]
	var reason string
	switch {
	case len(e.Hash) == 0:
		reason = ReasonUnchained
	case !seen && e.Revision != 0, seen && e.Revision != tail.revision+1:
		reason = ReasonGap
	case !bytes.Equal(e.PrevHash, tail.hash):
		reason = ReasonLink
	case !bytes.Equal(e.Rehash(), e.Hash):
		reason = ReasonHash
	}
	if reason != "" {
		pos, rev := e.Position, e.Revision
		v.report = ChainReport{Valid: false, Checked: v.report.Checked, FirstInvalid: &pos, Stream: e.StreamID, Revision: &rev, Reason: reason,
			Checkpoints: v.report.Checkpoints}
		return false
	}
	v.report.Checked++
	v.tails[e.StreamID] = chainTail{revision: e.Revision, hash: e.Hash}
	return true
}

// Count is how many events were fed; Rolling is their rolling hash.
func (v *ChainVerifier) Count() uint64   { return v.count }
func (v *ChainVerifier) Rolling() []byte { return v.rolling }

// Checkpoint compares the rolling hash of what was fed so far with a
// checkpoint of the same count taken at pos. Call it right after feeding
// the count-th event of the whole log.
func (v *ChainVerifier) Checkpoint(count uint64, pos Position, rolling []byte) bool {
	if !v.report.Valid {
		return false
	}
	if count != v.count || pos != v.last || !bytes.Equal(rolling, v.rolling) {
		p := pos
		v.report = ChainReport{Valid: false, Checked: v.report.Checked, FirstInvalid: &p, Reason: ReasonCheckpoint, Checkpoints: v.report.Checkpoints}
		return false
	}
	v.report.Checkpoints++
	return true
}

// Report is the verdict so far.
func (v *ChainVerifier) Report() ChainReport { return v.report }

// Raw returns the log under any wrapper that changes what events hold
// (the store that seals personal data opens it on reads): the chain hashes
// what the innermost log stores.
func Raw(s Store) Store {
	for {
		u, ok := s.(unwrapper)
		if !ok {
			return s
		}
		s = u.Unwrap()
	}
}

// VerifyStreams verifies whole streams, each from revision 0, and reports
// the invalid event with the lowest position, if any.
func VerifyStreams(ctx context.Context, s Store, streams []string) (ChainReport, error) {
	out := ChainReport{Valid: true}
	for _, stream := range streams {
		evs, err := ReadWholeStream(ctx, Raw(s), stream)
		if err != nil {
			return ChainReport{}, fmt.Errorf("verify %s: %w", stream, err)
		}
		v := NewChainVerifier()
		for _, e := range evs {
			if !v.Add(e) {
				break
			}
		}
		r := v.Report()
		out.Checked += r.Checked
		if !r.Valid && (out.Valid || r.FirstInvalid.Less(*out.FirstInvalid)) {
			out.Valid, out.FirstInvalid, out.Stream, out.Revision, out.Reason = false, r.FirstInvalid, r.Stream, r.Revision, r.Reason
		}
	}
	return out, nil
}

// CheckpointRef is a checkpoint as whole-log verification compares it.
type CheckpointRef struct {
	Count    uint64
	Position Position
	Rolling  []byte
	// Signed is whether the checkpoint's signature verified; one that does
	// not is a failure at its position, whatever its rolling hash.
	Signed bool
}

// VerifyLog verifies the whole log in log order and compares its rolling
// hash with each checkpoint (oldest first), which is what finds events
// removed from the end of a stream or whole streams removed. It stops at
// the first failure.
func VerifyLog(ctx context.Context, s Store, checkpoints []CheckpointRef) (ChainReport, error) {
	v := NewChainVerifier()
	after := Start
	for {
		evs, err := Raw(s).ReadAll(ctx, after, 1000)
		if err != nil {
			return ChainReport{}, fmt.Errorf("verify the log: %w", err)
		}
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			if !v.Add(e) {
				return v.Report(), nil
			}
			for len(checkpoints) > 0 && checkpoints[0].Count <= v.Count() {
				c := checkpoints[0]
				if !c.Signed {
					c.Rolling = nil // fails the comparison: the checkpoint itself was changed
				}
				if !v.Checkpoint(c.Count, c.Position, c.Rolling) {
					return v.Report(), nil
				}
				checkpoints = checkpoints[1:]
			}
		}
		after = evs[len(evs)-1].Position
	}
	if len(checkpoints) > 0 {
		// A checkpoint past the end: events it covered are gone.
		v.Checkpoint(checkpoints[0].Count, checkpoints[0].Position, checkpoints[0].Rolling)
	}
	return v.Report(), nil
}

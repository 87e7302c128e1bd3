package projections

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/consentledger/ledger/eventstore"
)

// Checkpoint defaults: a checkpoint every DefaultCheckpointEvery events, or
// at the first event DefaultCheckpointInterval (event time) after the last.
const (
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = time.Minute
)

// AuditCheckpoints folds the whole log, in log order, into the rolling
// hash of the chain (eventstore.Roll) and records a checkpoint every Every
// events or at the first event Interval after the last checkpoint, both
// counted in events and event time so that a rebuild gives the same rows.
// Signing is a separate step (SignCheckpoints): the projection needs no key.
//
// The newest events are covered by the next checkpoint only: on a quiet log
// that waits for the next event.
type AuditCheckpoints struct {
	Every    int           // events between checkpoints; 0 means DefaultCheckpointEvery
	Interval time.Duration // event time between checkpoints; 0 means DefaultCheckpointInterval
}

func (AuditCheckpoints) Name() string { return "audit_checkpoints" }
func (AuditCheckpoints) Tables() []string {
	return []string{"audit_chain_state", "audit_checkpoints"}
}

func (p AuditCheckpoints) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	every, interval := int64(p.Every), p.Interval
	if every <= 0 {
		every = DefaultCheckpointEvery
	}
	if interval <= 0 {
		interval = DefaultCheckpointInterval
	}
	var count, signedCount int64
	var rolling []byte
	var signedAt time.Time
	err := tx.QueryRow(ctx, `SELECT event_count, rolling_hash, signed_count, signed_at FROM audit_chain_state`).
		Scan(&count, &rolling, &signedCount, &signedAt)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("audit chain state: %w", err)
	}
	first := errors.Is(err, pgx.ErrNoRows)
	count++
	rolling = eventstore.Roll(rolling, ev.Hash)
	at := ev.Metadata.OccurredAt
	if first || count-signedCount >= every || at.Sub(signedAt) >= interval {
		if _, err := tx.Exec(ctx, `
			INSERT INTO audit_checkpoints (event_count, commit_position, prepare_position, rolling_hash, last_event_at)
			VALUES ($1, $2, $3, $4, $5)`, count, int64(ev.Position.Commit), int64(ev.Position.Prepare), rolling, at); err != nil {
			return fmt.Errorf("audit checkpoint: %w", err)
		}
		signedCount, signedAt = count, at
	}
	_, err = tx.Exec(ctx, `
		INSERT INTO audit_chain_state (commit_position, prepare_position, event_count, rolling_hash, signed_count, signed_at)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (singleton) DO UPDATE SET commit_position = $1, prepare_position = $2, event_count = $3,
			rolling_hash = $4, signed_count = $5, signed_at = $6`,
		int64(ev.Position.Commit), int64(ev.Position.Prepare), count, rolling, signedCount, signedAt)
	if err != nil {
		return fmt.Errorf("audit chain state: %w", err)
	}
	return nil
}

// Checkpoint is a signed statement that the log's first Count events, up to
// Position, fold into RollingHash.
type Checkpoint struct {
	Position    eventstore.Position `json:"position"`
	Count       uint64              `json:"count"`
	RollingHash []byte              `json:"rollingHash"`
	LastEventAt time.Time           `json:"lastEventAt"`
	PublicKey   []byte              `json:"publicKey"`
	Signature   []byte              `json:"signature"`
}

// Message is what Signature covers.
func (c Checkpoint) Message() []byte {
	return eventstore.CheckpointMessage(c.Position, c.Count, c.RollingHash, c.LastEventAt)
}

// Verify checks the signature against the checkpoint's own public key; the
// caller decides whether it trusts that key.
func (c Checkpoint) Verify() bool {
	return len(c.PublicKey) == ed25519.PublicKeySize && len(c.Signature) == ed25519.SignatureSize &&
		ed25519.Verify(ed25519.PublicKey(c.PublicKey), c.Message(), c.Signature)
}

// SignCheckpoints signs every checkpoint not yet signed with key and
// returns how many it signed. Signatures are deterministic: a rebuilt
// checkpoint signed with the same key gets the same signature.
func SignCheckpoints(ctx context.Context, db Execer, key ed25519.PrivateKey) (int, error) {
	if key == nil {
		return 0, nil
	}
	rows, err := db.Query(ctx, selectCheckpoint+`WHERE signature IS NULL ORDER BY event_count LIMIT 10000`)
	if err != nil {
		return 0, fmt.Errorf("unsigned checkpoints: %w", err)
	}
	cps, err := pgx.CollectRows(rows, scanCheckpoint)
	if err != nil {
		return 0, fmt.Errorf("unsigned checkpoints: %w", err)
	}
	pub := key.Public().(ed25519.PublicKey)
	for _, c := range cps {
		sig := ed25519.Sign(key, c.Message())
		if _, err := db.Exec(ctx, `UPDATE audit_checkpoints SET public_key = $2, signature = $3 WHERE event_count = $1 AND signature IS NULL`,
			int64(c.Count), []byte(pub), sig); err != nil {
			return 0, fmt.Errorf("sign checkpoint: %w", err)
		}
	}
	return len(cps), nil
}

// Execer is a pool, connection or transaction.
type Execer interface {
	Querier
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

const selectCheckpoint = `SELECT event_count, commit_position, prepare_position, rolling_hash, last_event_at, public_key, signature FROM audit_checkpoints `

func scanCheckpoint(row pgx.CollectableRow) (Checkpoint, error) {
	var c Checkpoint
	var count, commit, prepare int64
	err := row.Scan(&count, &commit, &prepare, &c.RollingHash, &c.LastEventAt, &c.PublicKey, &c.Signature)
	c.Count, c.Position = uint64(count), eventstore.Position{Commit: uint64(commit), Prepare: uint64(prepare)}
	c.LastEventAt = c.LastEventAt.UTC()
	return c, err
}

// Checkpoints lists signed checkpoints, newest first, those with a count
// below before (0: from the newest), at most limit.
func Checkpoints(ctx context.Context, db Querier, before uint64, limit int) ([]Checkpoint, error) {
	if before == 0 {
		before = 1<<63 - 1
	}
	rows, err := db.Query(ctx, selectCheckpoint+`WHERE signature IS NOT NULL AND event_count < $1 ORDER BY event_count DESC LIMIT $2`, int64(before), limit)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	return pgx.CollectRows(rows, scanCheckpoint)
}

// AllCheckpoints lists every checkpoint, signed or not, oldest first: the
// whole-log verification compares its rolling hash against each.
func AllCheckpoints(ctx context.Context, db Querier) ([]Checkpoint, error) {
	rows, err := db.Query(ctx, selectCheckpoint+`ORDER BY event_count`)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	return pgx.CollectRows(rows, scanCheckpoint)
}

package eventstore

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrSubjectErased: the subject's key was destroyed; nothing personal can be
// written for it again.
var ErrSubjectErased = errors.New("eventstore: the subject's personal data was erased")

// Keyring keeps one AES-256 data key per subject (account) in the table
// subject_keys, wrapped (AES-256-GCM) by a master key that never leaves the
// process. Keys are cached in memory once unwrapped; Destroy removes a key
// for good, which is what erasure by crypto-shredding means: every
// ciphertext sealed with it becomes noise.
//
// The cache is per process: an instance that erases evicts its own copy at
// once; other instances of the same deployment keep theirs until they
// restart, so erasure is expected to run where the subject is served (a
// deployment with several instances should route /v1/admin to one).
type Keyring struct {
	pool   *pgxpool.Pool
	master cipher.AEAD

	mu    sync.RWMutex
	cache map[uuid.UUID]cipher.AEAD // nil value: erased
}

// NewKeyring makes a keyring over pool; master is the 32-byte master key.
func NewKeyring(pool *pgxpool.Pool, master []byte) (*Keyring, error) {
	if len(master) != 32 {
		return nil, fmt.Errorf("eventstore: the master data key must be 32 bytes, got %d", len(master))
	}
	aead, err := newGCM(master)
	if err != nil {
		return nil, err
	}
	return &Keyring{pool: pool, master: aead, cache: map[uuid.UUID]cipher.AEAD{}}, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (k *Keyring) cached(subject uuid.UUID) (cipher.AEAD, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	aead, ok := k.cache[subject]
	return aead, ok
}

func (k *Keyring) remember(subject uuid.UUID, aead cipher.AEAD) {
	k.mu.Lock()
	k.cache[subject] = aead
	k.mu.Unlock()
}

// sealKey returns the subject's key, making one the first time.
func (k *Keyring) sealKey(ctx context.Context, subject uuid.UUID) (cipher.AEAD, error) {
	if aead, ok := k.cached(subject); ok {
		if aead == nil {
			return nil, ErrSubjectErased
		}
		return aead, nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	nonce := make([]byte, k.master.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	wrapped := k.master.Seal(nonce, nonce, key, subject[:])
	if _, err := k.pool.Exec(ctx, `INSERT INTO subject_keys (account_id, wrapped_key) VALUES ($1, $2)
		ON CONFLICT (account_id) DO NOTHING`, subject, wrapped); err != nil {
		return nil, fmt.Errorf("data key of %s: %w", subject, err)
	}
	aead, found, err := k.load(ctx, subject)
	if err != nil {
		return nil, err
	}
	if !found || aead == nil {
		return nil, ErrSubjectErased
	}
	return aead, nil
}

// openKey returns the subject's key, or nil when it was destroyed or never
// existed: the sealed data then reads as erased.
func (k *Keyring) openKey(ctx context.Context, subject uuid.UUID) (cipher.AEAD, error) {
	if aead, ok := k.cached(subject); ok {
		return aead, nil
	}
	aead, found, err := k.load(ctx, subject)
	if err != nil || !found {
		return nil, err
	}
	return aead, nil
}

// load reads and unwraps a key and caches the outcome (erased included).
func (k *Keyring) load(ctx context.Context, subject uuid.UUID) (aead cipher.AEAD, found bool, err error) {
	var wrapped []byte
	err = k.pool.QueryRow(ctx, `SELECT wrapped_key FROM subject_keys WHERE account_id = $1`, subject).Scan(&wrapped)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("data key of %s: %w", subject, err)
	}
	if wrapped != nil {
		ns := k.master.NonceSize()
		if len(wrapped) < ns {
			return nil, false, fmt.Errorf("data key of %s: truncated", subject)
		}
		key, err := k.master.Open(nil, wrapped[:ns], wrapped[ns:], subject[:])
		if err != nil {
			return nil, false, fmt.Errorf("data key of %s: cannot unwrap (wrong LEDGER_DATA_KEY?): %w", subject, err)
		}
		if aead, err = newGCM(key); err != nil {
			return nil, false, err
		}
	}
	k.remember(subject, aead)
	return aead, true, nil
}

// Destroy erases the subject's key for good (a subject without a key gets
// an erased row, so nothing personal is ever written for it again). It is
// idempotent.
func (k *Keyring) Destroy(ctx context.Context, subject uuid.UUID) error {
	_, err := k.pool.Exec(ctx, `
		INSERT INTO subject_keys (account_id, wrapped_key, erased_at) VALUES ($1, NULL, now())
		ON CONFLICT (account_id) DO UPDATE SET wrapped_key = NULL, erased_at = coalesce(subject_keys.erased_at, now())`, subject)
	if err != nil {
		return fmt.Errorf("erase data key of %s: %w", subject, err)
	}
	k.remember(subject, nil)
	return nil
}

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
// The cache is per process. Destroy marks the key erased in the cache of
// the instance that erases; every other instance marks it so with Forget
// when it applies the subject's account.erased.v1 from the log (ledger
// serve calls it from the in-memory token model, which commands wait for),
// so a key once erased is never used again anywhere, even though another
// instance had it cached. An erased entry is never replaced by a key read
// before the erasure.
type Keyring struct {
	pool   *pgxpool.Pool
	master cipher.AEAD

	// Current, when set, tells whether this process keeps up with the log
	// closely enough for its cached keys to be trusted (ledger serve: the
	// token model answers, see TokenValidity.Serving). While it says no, a
	// cached key is read again from subject_keys before each use, so an
	// instance too far behind to have applied an erasure, which commands
	// may have stopped waiting for, still reads the key as destroyed once
	// the erasing instance has destroyed it. Erased entries are always
	// trusted. It must not call the keyring.
	Current func() bool

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

// cached returns the cached key of subject, if it may be used: an erased
// entry always, a key only while the process is current.
func (k *Keyring) cached(subject uuid.UUID) (cipher.AEAD, bool) {
	k.mu.RLock()
	aead, ok := k.cache[subject]
	k.mu.RUnlock()
	if ok && aead != nil && k.Current != nil && !k.Current() {
		return nil, false
	}
	return aead, ok
}

// remember caches the outcome of a load; it never replaces an erased
// entry, since a load that started before the erasure may end after it.
func (k *Keyring) remember(subject uuid.UUID, aead cipher.AEAD) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if old, ok := k.cache[subject]; ok && old == nil {
		return
	}
	k.cache[subject] = aead
}

// Forget drops the subject's key from this process for good, as if it had
// been destroyed here: from then on the subject's personal data reads as
// null and nothing personal is sealed for it, whatever the database still
// holds (the instance that erases destroys the key there just after the
// erasure is in the log). It touches no database, so it may be called while
// the caller holds a lock, and it is idempotent.
func (k *Keyring) Forget(subject uuid.UUID) {
	k.mu.Lock()
	k.cache[subject] = nil
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
	k.Forget(subject)
	return nil
}

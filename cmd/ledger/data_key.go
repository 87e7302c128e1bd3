package main

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

// devDataKey is the master data key of dev mode without LEDGER_DATA_KEY. It
// is public (derived from a constant), so that a dev server restarts onto
// the data it wrote; it protects nothing.
var devDataKey = sha256.Sum256([]byte("consent-ledger development data key: not a secret"))

// dataKey reads LEDGER_DATA_KEY: 32 bytes in standard or URL base64 (e.g.
// `openssl rand -base64 32`). It wraps every subject's data key; losing it
// loses every e-mail, name and phone number in the log, changing it needs
// the keys rewrapped. Outside dev mode it is required.
func dataKey(dev bool) ([]byte, error) {
	raw := os.Getenv("LEDGER_DATA_KEY")
	if raw == "" {
		if !dev {
			return nil, fmt.Errorf("LEDGER_DATA_KEY is required outside dev mode (32 bytes, base64: openssl rand -base64 32)")
		}
		slog.Warn("no LEDGER_DATA_KEY: personal data is sealed with the public development key")
		return devDataKey[:], nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if key, err := enc.DecodeString(raw); err == nil && len(key) == 32 {
			return key, nil
		}
	}
	return nil, fmt.Errorf("LEDGER_DATA_KEY must be 32 bytes in base64")
}

// sealStore wraps the log so that personal data is sealed with per-subject
// keys before it is stored, and opened on every read.
func sealStore(cfg config, pool *pgxpool.Pool, store eventstore.Store) (eventstore.Store, error) {
	key, err := dataKey(cfg.Dev)
	if err != nil {
		return nil, err
	}
	keys, err := eventstore.NewKeyring(pool, key)
	if err != nil {
		return nil, err
	}
	return eventstore.Seal(store, keys, commands.PersonalData{}), nil
}

// forgetErased makes this instance drop a subject's data key from its
// keyring, and the subject's messages from its outboxes, as soon as its
// token model applies the subject's account.erased.v1, wherever the
// erasure ran: the key may be cached here from before, and a message
// queued here. Commands wait for every live instance's token model, so once
// an erasure (or any later command) has answered, no instance opens the
// subject's personal data again or sends it a message; and while this
// instance's model falls behind (commands then stop waiting for it), its
// cached keys are read again from the database, where the erasing instance
// destroyed them.
func forgetErased(tokens *projections.TokenValidity, store eventstore.Store, outboxes commands.Outboxes) {
	keys, sealed := eventstore.KeyringOf(store)
	if !sealed {
		return // no erasure without the sealed log (EraseAccount refuses)
	}
	keys.Current = tokens.Serving
	tokens.OnErased = func(account uuid.UUID) {
		keys.Forget(account)
		outboxes.Forget(account)
	}
}

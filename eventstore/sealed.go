package eventstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// PersonalData tells the sealed store which parts of an event are personal
// data and whose they are. The domain areas know; the log does not.
type PersonalData interface {
	// Fields lists the top-level payload fields of an event type that hold
	// personal data (string values); none for most types.
	Fields(eventType string) []string
	// Subject names the account the personal data of an event belongs to.
	Subject(stream string, data json.RawMessage) (uuid.UUID, bool)
}

// sealedPrefix marks a sealed value: "pii:v1:" + base64(nonce ‖ AES-GCM
// ciphertext), so a sealed payload keeps its JSON shape (a string stays a
// string) and any reader can tell clear values from sealed ones.
const sealedPrefix = "pii:v1:"

// Sealed is the log as the ledger uses it: personal data is sealed with the
// subject's key before it reaches the inner store (and so before the
// inner store hashes or copies it), and opened on every read, the one place
// through which commands, projections and auditors see events. A value whose
// key was destroyed reads as null: the fact stays, the person is gone.
type Sealed struct {
	Store
	keys *Keyring
	pd   PersonalData
}

var _ Store = (*Sealed)(nil)

// Seal wraps inner.
func Seal(inner Store, keys *Keyring, pd PersonalData) *Sealed {
	return &Sealed{Store: inner, keys: keys, pd: pd}
}

// Unwrap returns the inner store, which holds and returns the sealed form:
// what the log's hashes, exports and copies must see.
func (s *Sealed) Unwrap() Store { return s.Store }

// Keys is the keyring (erasure destroys keys through it).
func (s *Sealed) Keys() *Keyring { return s.keys }

func (s *Sealed) Append(ctx context.Context, stream string, expected ExpectedRevision, events ...EventData) (AppendResult, error) {
	sealed := make([]EventData, len(events))
	for i, ev := range events {
		data, err := s.seal(ctx, stream, ev)
		if err != nil {
			return AppendResult{}, err
		}
		ev.Data = data
		sealed[i] = ev
	}
	return s.Store.Append(ctx, stream, expected, sealed...)
}

func (s *Sealed) ReadStream(ctx context.Context, stream string, opts ReadStreamOptions) ([]RecordedEvent, error) {
	evs, err := s.Store.ReadStream(ctx, stream, opts)
	if err != nil {
		return nil, err
	}
	return evs, s.openAll(ctx, evs)
}

func (s *Sealed) ReadAll(ctx context.Context, after Position, max int) ([]RecordedEvent, error) {
	evs, err := s.Store.ReadAll(ctx, after, max)
	if err != nil {
		return nil, err
	}
	return evs, s.openAll(ctx, evs)
}

func (s *Sealed) SubscribeAll(ctx context.Context, after Position) (Subscription, error) {
	sub, err := s.Store.SubscribeAll(ctx, after)
	if err != nil {
		return nil, err
	}
	return &sealedSubscription{Subscription: sub, s: s}, nil
}

type sealedSubscription struct {
	Subscription
	s *Sealed
}

func (u *sealedSubscription) Next(ctx context.Context) ([]RecordedEvent, error) {
	evs, err := u.Subscription.Next(ctx)
	if err != nil {
		return nil, err
	}
	return evs, u.s.openAll(ctx, evs)
}

// seal replaces the personal fields of ev by their sealed form.
func (s *Sealed) seal(ctx context.Context, stream string, ev EventData) (json.RawMessage, error) {
	fields := s.pd.Fields(ev.Type)
	if len(fields) == 0 || !json.Valid(ev.Data) {
		return ev.Data, nil // an invalid event is refused by the inner store
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(ev.Data, &obj); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidEvent, ev.Type, err)
	}
	var changed bool
	var aead interface {
		Seal(dst, nonce, plaintext, additionalData []byte) []byte
		NonceSize() int
	}
	var subject uuid.UUID
	for _, f := range fields {
		var clear string
		if raw, ok := obj[f]; !ok || json.Unmarshal(raw, &clear) != nil || clear == "" || strings.HasPrefix(clear, sealedPrefix) {
			continue
		}
		if aead == nil {
			var ok bool
			if subject, ok = s.pd.Subject(stream, ev.Data); !ok {
				return nil, fmt.Errorf("%w: %s: personal data without a subject", ErrInvalidEvent, ev.Type)
			}
			key, err := s.keys.sealKey(ctx, subject)
			if err != nil {
				return nil, err
			}
			aead = key
		}
		nonce := make([]byte, aead.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			return nil, err
		}
		box := aead.Seal(nonce, nonce, []byte(clear), aad(subject, ev.Type, f))
		obj[f], _ = json.Marshal(sealedPrefix + base64.StdEncoding.EncodeToString(box))
		changed = true
	}
	if !changed {
		return ev.Data, nil
	}
	return json.Marshal(obj)
}

// aad binds a sealed value to its subject, event type and field: a value
// copied into another event or field does not open.
func aad(subject uuid.UUID, eventType, field string) []byte {
	return []byte(subject.String() + "\x00" + eventType + "\x00" + field)
}

func (s *Sealed) openAll(ctx context.Context, evs []RecordedEvent) error {
	for i := range evs {
		data, err := s.open(ctx, evs[i].StreamID, evs[i].Type, evs[i].Data)
		if err != nil {
			return fmt.Errorf("event %s (%s): %w", evs[i].ID, evs[i].Type, err)
		}
		evs[i].Data = data
	}
	return nil
}

// Open returns the payload of a stored event with its personal data in
// clear, or null where the subject's key was destroyed.
func (s *Sealed) Open(ctx context.Context, ev RecordedEvent) (json.RawMessage, error) {
	return s.open(ctx, ev.StreamID, ev.Type, ev.Data)
}

func (s *Sealed) open(ctx context.Context, stream, eventType string, data json.RawMessage) (json.RawMessage, error) {
	fields := s.pd.Fields(eventType)
	if len(fields) == 0 || !bytes.Contains(data, []byte(sealedPrefix)) {
		return data, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, err
	}
	subject, ok := s.pd.Subject(stream, data)
	if !ok {
		return nil, fmt.Errorf("sealed personal data without a subject")
	}
	for _, f := range fields {
		var v string
		if raw, ok := obj[f]; !ok || json.Unmarshal(raw, &v) != nil || !strings.HasPrefix(v, sealedPrefix) {
			continue
		}
		aead, err := s.keys.openKey(ctx, subject)
		if err != nil {
			return nil, err
		}
		if aead == nil {
			obj[f] = json.RawMessage("null") // erased
			continue
		}
		box, err := base64.StdEncoding.DecodeString(v[len(sealedPrefix):])
		if err != nil || len(box) < aead.NonceSize() {
			return nil, fmt.Errorf("field %s: malformed sealed value", f)
		}
		clear, err := aead.Open(nil, box[:aead.NonceSize()], box[aead.NonceSize():], aad(subject, eventType, f))
		if err != nil {
			return nil, fmt.Errorf("field %s: sealed value does not open: %w", f, err)
		}
		obj[f], _ = json.Marshal(string(clear))
	}
	return json.Marshal(obj)
}

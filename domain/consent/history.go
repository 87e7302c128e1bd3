package consent

import (
	"time"

	"github.com/google/uuid"
)

// GrantRecord is what an auditor is answered about one account's grants to
// one client at an instant: the state folded from the grant stream's events
// up to that instant, by event time. It follows the same rules as the
// consents read model (a refusal leaves an active grant as it was) without
// ever reading it.
type GrantRecord struct {
	GrantID          uuid.UUID  `json:"grantId"`
	AccountID        uuid.UUID  `json:"accountId"`
	ClientID         uuid.UUID  `json:"clientId"`
	Controller       string     `json:"controller,omitempty"`
	Status           string     `json:"status"` // granted, revoked, denied
	Scopes           []string   `json:"scopes"`
	VINs             []string   `json:"vins"`
	NoticeVersion    string     `json:"noticeVersion"`
	CollectionMethod string     `json:"collectionMethod"`
	GrantedAt        *time.Time `json:"grantedAt,omitempty"`
	RevokedAt        *time.Time `json:"revokedAt,omitempty"`
	RevokedReason    string     `json:"revokedReason,omitempty"`
	DeniedAt         *time.Time `json:"deniedAt,omitempty"`
	// GrantEventID is the event that granted what Status says is granted
	// (or last was): the consent receipt's source.
	GrantEventID *uuid.UUID `json:"grantEventId,omitempty"`
}

// Exists reports whether anything had been answered.
func (r *GrantRecord) Exists() bool { return r.Status != "" }

// Apply folds one event of a grant stream; id is the event's id, at its time.
func (r *GrantRecord) Apply(event any, id uuid.UUID, at time.Time) {
	switch e := event.(type) {
	case *Granted:
		r.GrantID, r.AccountID, r.ClientID, r.Controller = e.GrantID, e.AccountID, e.ClientID, e.Controller
		r.Status, r.Scopes, r.VINs = "granted", e.Scopes, nonNilStrings(e.VINs)
		r.NoticeVersion, r.CollectionMethod = e.NoticeVersion, e.CollectionMethod
		r.GrantedAt, r.RevokedAt, r.RevokedReason, r.GrantEventID = &at, nil, "", &id
	case *Denied:
		r.DeniedAt = &at
		if r.Status == "granted" {
			return // a refusal leaves an active grant as it was
		}
		r.GrantID, r.AccountID, r.ClientID = e.GrantID, e.AccountID, e.ClientID
		r.Status, r.Scopes, r.NoticeVersion, r.CollectionMethod = "denied", e.Scopes, e.NoticeVersion, e.CollectionMethod
		if r.VINs == nil {
			r.VINs = []string{}
		}
	case *Revoked:
		if r.Status == "granted" {
			r.Status, r.RevokedAt, r.RevokedReason = "revoked", &at, e.Reason
		}
	}
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Fact is one event of a grant stream as stored, not decoded yet.
type Fact struct {
	Type string
	Data []byte
	ID   uuid.UUID
	At   time.Time
}

// FoldRecord gives the record Apply gives when it folds every fact in
// order, but decodes only the facts that answer depends on. A grant sets
// every field but DeniedAt, so what came before the last grant only
// matters through DeniedAt, the time of the last refusal; without a
// grant, the last refusal sets every field a refusal sets, and revocations
// change nothing. So the fold starts at the last grant (or, failing one,
// at the last refusal) and DeniedAt is the last refusal's time. A stream
// answered many times over (granted, revoked, granted again) then costs
// one decode per fact after its last grant, not one per fact.
func FoldRecord(facts []Fact) (*GrantRecord, error) {
	r := &GrantRecord{}
	lastGrant, lastDenial := -1, -1
	for i, f := range facts {
		switch f.Type {
		case TypeGranted:
			lastGrant = i
		case TypeDenied:
			lastDenial = i
		}
	}
	start := lastGrant
	if start < 0 {
		start = lastDenial
	}
	if start < 0 {
		return r, nil
	}
	for _, f := range facts[start:] {
		switch f.Type {
		case TypeGranted, TypeDenied, TypeRevoked:
		default:
			continue
		}
		payload, err := Decode(f.Type, f.Data)
		if err != nil {
			return nil, err
		}
		r.Apply(payload, f.ID, f.At)
	}
	if lastDenial >= 0 {
		at := facts[lastDenial].At
		r.DeniedAt = &at
	}
	return r, nil
}

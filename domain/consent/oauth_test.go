package consent_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain/consent"
)

// TestTokenFamilyRecord: given a family's events, when an exchange records
// its changes, then these events (or this error).
func TestTokenFamilyRecord(t *testing.T) {
	client, acct := uuid.New(), uuid.New()
	grant := consent.TokenGrant{RequestID: "req-1", ClientID: client, AccountID: &acct, GrantType: "authorization_code",
		GrantedScopes: []string{consent.ScopeProfile}}
	code := &consent.CodeIssued{Signature: "code", TokenGrant: grant}
	at := &consent.TokenIssued{Signature: "at1", Kind: consent.KindAccessToken, TokenGrant: grant}
	rt := &consent.TokenIssued{Signature: "rt1", Kind: consent.KindRefreshToken, AccessSignature: "at1", TokenGrant: grant}
	at2 := &consent.TokenIssued{Signature: "at2", Kind: consent.KindAccessToken, TokenGrant: grant}
	rt2 := &consent.TokenIssued{Signature: "rt2", Kind: consent.KindRefreshToken, TokenGrant: grant}
	used := &consent.CodeUsed{RequestID: "req-1", Signature: "code"}
	rotated := &consent.RefreshTokenRotated{RequestID: "req-1", Signature: "rt1"}
	rotatedSuperseding := &consent.RefreshTokenRotated{RequestID: "req-1", Signature: "rt1", SupersededSignatures: []string{"at1"}}
	revoked := func(kind, reason string, sigs ...string) *consent.TokenRevoked {
		return &consent.TokenRevoked{RequestID: "req-1", ClientID: client, AccountID: &acct, Kind: kind, Signatures: sigs, Reason: reason}
	}
	all := func(kind, reason string) *consent.TokenRevoked {
		return &consent.TokenRevoked{Kind: kind, Reason: reason}
	}

	for _, c := range []struct {
		name    string
		given   []any
		changes []any
		want    []any
		err     error
	}{
		{"a code is issued", nil, []any{code}, []any{code}, nil},
		{"an exchange uses the code and issues a pair", []any{code}, []any{used, at, rt}, []any{used, at, rt}, nil},
		{"a used code again: replay, the family ends, nothing is issued", []any{code, used, at, rt}, []any{used, at2},
			[]any{&consent.CodeReplayDetected{RequestID: "req-1", ClientID: client, AccountID: &acct, Signature: "code"},
				revoked(consent.KindAccessToken, consent.RevokedCodeReplay, "at1"), revoked(consent.KindRefreshToken, consent.RevokedCodeReplay, "rt1")},
			consent.ErrCodeUsed},
		{"an unknown code", nil, []any{used}, nil, consent.ErrUnknownToken},
		{"a refresh rotates and supersedes the access token", []any{code, used, at, rt}, []any{rotated, at2, rt2},
			[]any{rotatedSuperseding, at2, rt2}, nil},
		{"a rotated refresh token again: reuse, the family ends", []any{code, used, at, rt, rotatedSuperseding, at2, rt2},
			[]any{rotated},
			[]any{&consent.RefreshReuseDetected{RequestID: "req-1", ClientID: client, AccountID: &acct, Signature: "rt1"},
				revoked(consent.KindAccessToken, consent.RevokedRefreshReuse, "at2"), revoked(consent.KindRefreshToken, consent.RevokedRefreshReuse, "rt2")},
			consent.ErrTokenInactive},
		{"a revoked refresh token cannot rotate", []any{code, used, at, rt, revoked(consent.KindRefreshToken, consent.RevokedByClient, "rt1")},
			[]any{rotated}, nil, consent.ErrTokenInactive},
		{"revoking what is already revoked changes nothing", []any{code, used, at, rt, revoked(consent.KindAccessToken, consent.RevokedByClient, "at1")},
			[]any{all(consent.KindAccessToken, consent.RevokedByClient)}, nil, nil},
		{"a client revocation names the tokens it ends", []any{code, used, at, rt},
			[]any{all(consent.KindRefreshToken, consent.RevokedByClient), all(consent.KindAccessToken, consent.RevokedByClient)},
			[]any{revoked(consent.KindRefreshToken, consent.RevokedByClient, "rt1"), revoked(consent.KindAccessToken, consent.RevokedByClient, "at1")}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &consent.TokenFamily{}
			for _, e := range c.given {
				f.Apply(e, time.Now())
			}
			got, err := f.Record(c.changes)
			if !errors.Is(err, c.err) || (c.err == nil && err != nil) {
				t.Fatalf("error %v, want %v", err, c.err)
			}
			if len(got) != len(c.want) || (len(got) > 0 && !reflect.DeepEqual(got, c.want)) {
				t.Fatalf("events\n%#v\nwant\n%#v", got, c.want)
			}
			for _, e := range got {
				if consent.TypeOf(e) == "" {
					t.Fatalf("%T has no type name", e)
				}
			}
		})
	}
}

func TestTokenFamilyRefusesForeignTokens(t *testing.T) {
	f := &consent.TokenFamily{}
	g := consent.TokenGrant{RequestID: "req-1", ClientID: uuid.New()}
	f.Apply(&consent.CodeIssued{Signature: "code", TokenGrant: g}, time.Now())
	other := g
	other.ClientID = uuid.New()
	if _, err := f.Record([]any{&consent.TokenIssued{Signature: "at", Kind: consent.KindAccessToken, TokenGrant: other}}); err == nil {
		t.Fatal("another client's token joined the family")
	}
	if _, err := f.Record([]any{&consent.CodeIssued{Signature: "code", TokenGrant: g}}); err == nil {
		t.Fatal("a signature was issued twice")
	}
}

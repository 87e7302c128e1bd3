package projections

import (
	"reflect"
	"testing"

	"github.com/consentledger/ledger/domain/account"
)

// TestDecodeAccountAgreesWithDecode feeds the fast path and account.Decode
// the same payloads: what jsonb prints, and the shapes the fast path leaves
// to account.Decode.
func TestDecodeAccountAgreesWithDecode(t *testing.T) {
	const id = `"6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"`
	for _, tc := range []struct{ typ, data string }{
		{account.TypeRegistered, `{"email": "a@example.com", "accountId": ` + id + `, "passwordHash": "$argon2id$v=19$m=65536,t=3,p=2$x$y", "activationExpiresAt": "2026-01-02T00:00:00.5Z", "activationSecretHash": "ab"}`},
		{account.TypeRegistered, `{"email": "", "accountId": ` + id + `, "activationExpiresAt": "2026-01-02T00:00:00+01:00"}`},
		{account.TypeRegistered, `{"accountId": ` + id + `, "nickname": "x"}`},
		{account.TypeRegistered, `{"accountId": ` + id + `, "Email": "upper@example.com"}`},
		{account.TypeRegistered, `{"accountId": ` + id + `, "email": "a@example.com", "EMAIL": "b@example.com"}`},
		{account.TypeRegistered, `{"accountId": "not a uuid"}`},
		{account.TypeRegistered, `{"accountId": ` + id + `, "activationExpiresAt": "tomorrow"}`},
		{account.TypeRegistered, `{"accountId": ` + id + `, "email": "\u00e9@example.com"}`},
		{account.TypeRegistered, `{"accountId": ` + id + `, "email": null}`},
		{account.TypeRegistered, `{"accountId": ` + id + `, "email": 5}`},
		{account.TypeRegistered, `{"accountId": ` + id + `,}`},
		{account.TypeActivated, `{"accountId": ` + id + `}`},
		{account.TypeActivated, `{"accountid": ` + id + `}`},
		{account.TypeActivated, `{"accountId": "6F1C2A9E3B4D4E5F8A7B9C0D1E2F3A4B"}`},
		{account.TypeActivated, `{}`},
		{account.TypeErased, `{"accountId": ` + id + `}`},
	} {
		fast, errFast := decodeAccount(tc.typ, []byte(tc.data))
		slow, errSlow := account.Decode(tc.typ, []byte(tc.data))
		if (errFast == nil) != (errSlow == nil) || (errSlow == nil && !reflect.DeepEqual(fast, slow)) {
			t.Errorf("%s %s: %+v, %v; account.Decode %+v, %v", tc.typ, tc.data, fast, errFast, slow, errSlow)
		}
	}
}

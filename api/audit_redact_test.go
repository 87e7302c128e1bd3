package api

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestHistoryLinesHideSecretDigests(t *testing.T) {
	in := json.RawMessage(`{"accountId":"a","passwordHash":"$argon2id$v=19$secret","nested":{"pinHash":"p","codeHash":""},"list":[{"tokenHash":"t"}],"vin":"V"}`)
	out := string(withoutSecretDigests(in))
	for _, leaked := range []string{"argon2id", `"p"`, `"t"`} {
		if strings.Contains(out, leaked) {
			t.Errorf("%s still in %s", leaked, out)
		}
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil || m["accountId"] != "a" || m["vin"] != "V" || m["passwordHash"] != "redacted" {
		t.Fatalf("the other fields must stay: %s (%v)", out, err)
	}
	plain := json.RawMessage(`{"accountId":"a"}`)
	if got := withoutSecretDigests(plain); string(got) != string(plain) {
		t.Fatalf("data without digests changed: %s", got)
	}
}

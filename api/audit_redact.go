package api

import (
	"bytes"
	"encoding/json"
)

// secretDigestFields are the event fields that hold digests of secrets
// (argon2id hashes of passwords, PINs and codes; SHA-256 of tokens and
// keys). They prove nothing an auditor needs, and a password hash handed out
// is one an attacker can try to crack offline, so history lines show them
// as "redacted". The stored event is unchanged: the chain hash and the
// offline bundle cover what the log holds.
var secretDigestFields = []string{
	"passwordHash", "activationSecretHash", "tokenHash", "codeHash", "pinHash", "secretHash", "keyHash",
}

// withoutSecretDigests returns data with every secret digest field, at any
// depth, replaced by "redacted". Data without such a field is returned as
// it is, without decoding.
func withoutSecretDigests(data json.RawMessage) json.RawMessage {
	if !bytes.Contains(data, []byte(`Hash"`)) {
		return data
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return data
	}
	if !redactDigests(v) {
		return data
	}
	out, err := json.Marshal(v)
	if err != nil {
		return data
	}
	return out
}

func redactDigests(v any) (changed bool) {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if isSecretDigestField(k) {
				if x != nil && x != "" {
					t[k], changed = "redacted", true
				}
				continue
			}
			changed = redactDigests(x) || changed
		}
	case []any:
		for _, x := range t {
			changed = redactDigests(x) || changed
		}
	}
	return changed
}

func isSecretDigestField(k string) bool {
	for _, f := range secretDigestFields {
		if k == f {
			return true
		}
	}
	return false
}

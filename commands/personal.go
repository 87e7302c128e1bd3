package commands

import (
	"encoding/json"
	"strings"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/enrollment"
	"github.com/consentledger/ledger/eventstore"
)

// PersonalData is the ledger's map of personal data in events: e-mail
// addresses, names and phone numbers. The sealed log encrypts exactly these
// fields with the key of the account they belong to, so erasing an account
// (destroying its key) erases them everywhere at once. Ids, hashes, VINs of
// cars and the facts themselves stay readable: they are what an auditor
// needs and identify nobody without the ledger's other records.
type PersonalData struct{}

var _ eventstore.PersonalData = PersonalData{}

var personalFields = map[string][]string{
	account.TypeRegistered:         {"email"},
	account.TypeProvisioned:        {"firstName", "lastName", "username"},
	enrollment.TypeSmsCodeSent:     {"phone"},
	enrollment.TypePhoneRegistered: {"phone"},
	enrollment.TypePhoneModified:   {"phone"},
}

func (PersonalData) Fields(eventType string) []string { return personalFields[eventType] }

// Subject: enrollment streams are named after their account; account events
// name theirs.
func (PersonalData) Subject(stream string, data json.RawMessage) (uuid.UUID, bool) {
	if rest, ok := strings.CutPrefix(stream, "enrollment-"); ok {
		id, err := uuid.Parse(rest)
		return id, err == nil
	}
	var p struct {
		AccountID uuid.UUID `json:"accountId"`
	}
	if json.Unmarshal(data, &p) != nil || p.AccountID == uuid.Nil {
		return uuid.Nil, false
	}
	return p.AccountID, true
}

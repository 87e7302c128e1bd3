package consent

import (
	"slices"
	"time"

	"github.com/google/uuid"
)

// Receipt is a consent receipt: the fields of the Kantara Initiative
// Consent Receipt v1.1 and ISO/IEC TS 27560, for one grant. It names the
// person only by the account id (a pseudonym: after erasure nothing links
// it to anyone) and holds no e-mail, name, phone or VIN, so it stays valid
// proof after erasure. It is built from the granting event alone, so the
// same grant always gives the same receipt, byte for byte.
type Receipt struct {
	Version          string               `json:"version"`
	Jurisdiction     string               `json:"jurisdiction"`
	ConsentTimestamp int64                `json:"consentTimestamp"` // seconds since the epoch (Kantara)
	ConsentTime      time.Time            `json:"consentTime"`
	CollectionMethod string               `json:"collectionMethod"`
	ConsentReceiptID uuid.UUID            `json:"consentReceiptID"`
	Language         string               `json:"language"`
	PIIPrincipalID   string               `json:"piiPrincipalId"`
	PIIControllers   []ReceiptController  `json:"piiControllers"`
	NoticeVersion    string               `json:"noticeVersion"`
	Services         []ReceiptService     `json:"services"`
	Sensitive        bool                 `json:"sensitive"`
	SPICat           []string             `json:"spiCat"`
	WithdrawalMethod string               `json:"withdrawalMethod"`
	GrantID          uuid.UUID            `json:"grantId"`
	GrantEventID     uuid.UUID            `json:"grantEventId"`
	Recipient        ReceiptRecipientInfo `json:"recipient"`
}

type ReceiptController struct {
	PIIController string `json:"piiController"`
	Role          string `json:"role"`
}

type ReceiptService struct {
	Service  string           `json:"service"`
	Purposes []ReceiptPurpose `json:"purposes"`
}

type ReceiptPurpose struct {
	Purpose              string   `json:"purpose"`
	PurposeCategory      []string `json:"purposeCategory"`
	ConsentType          string   `json:"consentType"`
	PIICategory          []string `json:"piiCategory"`
	PrimaryPurpose       bool     `json:"primaryPurpose"`
	Termination          string   `json:"termination"`
	ThirdPartyDisclosure bool     `json:"thirdPartyDisclosure"`
	ThirdPartyName       string   `json:"thirdPartyName"`
}

// ReceiptRecipientInfo names the partner client the consent was given to.
type ReceiptRecipientInfo struct {
	ClientID uuid.UUID `json:"clientId"`
	Name     string    `json:"name"`
}

// ReceiptVersion is the Kantara specification the receipt follows.
const ReceiptVersion = "KI-CR-v1.1.0"

// WithdrawalMethod tells the person how to withdraw, as the receipt says it.
const WithdrawalMethod = "Revoke access in the account portal, or DELETE /v1/me/consents/{clientId}; effective at once"

var receipts = uuid.MustParse("0b8f8c1e-5c61-4f0e-9a3c-7d2f6a1b9e44")

// scopePurposes says, per scope, the purpose and the categories of personal
// data it discloses.
var scopePurposes = map[string]struct {
	purpose    string
	categories []string
}{
	ScopeProfile:       {"Identify the account holder to the partner's service", []string{"account identifier", "contact details (e-mail address)"}},
	ScopeVehicleStatus: {"Show the vehicle's status in the partner's service", []string{"vehicle identifier (VIN)", "vehicle status", "vehicle location"}},
	ScopeVehicleRemote: {"Send remote commands to the vehicle from the partner's service", []string{"vehicle identifier (VIN)", "remote command history"}},
}

// NewReceipt builds the receipt of the grant r describes (r must stand on a
// grant: GrantEventID and GrantedAt set). controller is who collected the
// consent (the ledger's operator), jurisdiction where.
func NewReceipt(r GrantRecord, controller, jurisdiction string) Receipt {
	at := r.GrantedAt.UTC()
	partner := r.Controller
	purposes := []ReceiptPurpose{}
	for _, s := range slices.Sorted(slices.Values(r.Scopes)) {
		p, ok := scopePurposes[s]
		if !ok {
			p.purpose, p.categories = s, []string{}
		}
		purposes = append(purposes, ReceiptPurpose{
			Purpose: p.purpose, PurposeCategory: []string{s}, ConsentType: "EXPLICIT",
			PIICategory: p.categories, PrimaryPurpose: true, Termination: "Until withdrawn by the person",
			ThirdPartyDisclosure: true, ThirdPartyName: partner,
		})
	}
	return Receipt{
		Version: ReceiptVersion, Jurisdiction: jurisdiction, ConsentTimestamp: at.Unix(), ConsentTime: at,
		CollectionMethod: r.CollectionMethod, ConsentReceiptID: uuid.NewSHA1(receipts, r.GrantEventID[:]),
		Language: "en", PIIPrincipalID: r.AccountID.String(),
		PIIControllers: []ReceiptController{{PIIController: controller, Role: "controller"}, {PIIController: partner, Role: "recipient"}},
		NoticeVersion:  r.NoticeVersion,
		Services:       []ReceiptService{{Service: partner, Purposes: purposes}},
		SPICat:         []string{}, WithdrawalMethod: WithdrawalMethod,
		GrantID: r.GrantID, GrantEventID: *r.GrantEventID,
		Recipient: ReceiptRecipientInfo{ClientID: r.ClientID, Name: partner},
	}
}

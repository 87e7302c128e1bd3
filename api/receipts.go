package api

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/domain/consent"
)

// Who collects consent and under which law, as receipts state it.
const (
	receiptController   = "Consent Ledger operator"
	receiptJurisdiction = "EU (GDPR)"
)

// signedReceipt is a receipt and its signature: jws is the receipt as a
// JWS compact serialization (RFC 7515, alg EdDSA per RFC 8037) whose payload
// is exactly the receipt's JSON; publicKey is the audit key's public half
// (standard base64) and keyId its SHA-256 prefix, to compare with the key
// the ledger publishes.
type signedReceipt struct {
	Receipt   consent.Receipt `json:"receipt"`
	JWS       string          `json:"jws"`
	Algorithm string          `json:"alg"`
	KeyID     string          `json:"keyId"`
	PublicKey string          `json:"publicKey"`
}

var errReceiptsUnavailable = Problem(http.StatusServiceUnavailable, "receipts_unavailable", "no audit signing key is configured")

// receipt answers the signed receipt of the last grant of account to
// client, whether it is still active or not (a receipt proves the consent
// act; the grant's later state is in the history).
func (h *handlers) receipt(c echo.Context, accountID, clientID uuid.UUID) error {
	if h.AuditKey == nil {
		return errReceiptsUnavailable
	}
	r, err := h.grantAsOf(c.Request().Context(), consent.GrantStream(accountID, clientID), maxTime)
	if err != nil {
		return err
	}
	if r.GrantEventID == nil {
		return consent.ErrNoGrant
	}
	out, err := signReceipt(h.AuditKey, consent.NewReceipt(*r, receiptController, receiptJurisdiction))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func signReceipt(key ed25519.PrivateKey, r consent.Receipt) (signedReceipt, error) {
	payload, err := json.Marshal(r)
	if err != nil {
		return signedReceipt{}, err
	}
	pub := key.Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	kid := hex.EncodeToString(sum[:8])
	header, _ := json.Marshal(map[string]string{"alg": "EdDSA", "typ": "consent-receipt+json", "kid": kid})
	b64 := base64.RawURLEncoding
	input := b64.EncodeToString(header) + "." + b64.EncodeToString(payload)
	sig := ed25519.Sign(key, []byte(input))
	return signedReceipt{Receipt: r, JWS: input + "." + b64.EncodeToString(sig), Algorithm: "EdDSA",
		KeyID: kid, PublicKey: base64.StdEncoding.EncodeToString(pub)}, nil
}

// myReceipt: the signed receipt of the caller's grant to a client.
func (h *handlers) myReceipt(c echo.Context) error {
	id, err := uuid.Parse(c.Param("clientId"))
	if err != nil {
		return consent.ErrNoGrant
	}
	return h.receipt(c, session(c).AccountID(), id)
}

// auditReceipt: the same receipt, for an auditor.
func (h *handlers) auditReceipt(c echo.Context) error {
	accountID, err1 := uuid.Parse(c.Param("id"))
	clientID, err2 := uuid.Parse(c.Param("clientId"))
	if err1 != nil || err2 != nil {
		return consent.ErrNoGrant
	}
	return h.receipt(c, accountID, clientID)
}

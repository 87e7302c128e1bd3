package api

// Stand-ins for the auditor credentials and the event chain, replaced when
// they land: auditor routes accept the admin token, lines carry no hash.

import (
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/eventstore"
)

// RequireAuditor stands in for the auditor-key check.
func (h *handlers) RequireAuditor(next echo.HandlerFunc) echo.HandlerFunc {
	return h.server.RequireAdmin(next)
}

// eventHash is the event's chain hash ("" until the chain exists).
func eventHash(*eventstore.RecordedEvent) string { return "" }

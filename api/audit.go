package api

import (
	"crypto/ed25519"
	"net/http"
	"strconv"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

// mountChain registers the auditor routes of the tamper-evident chain.
func (h *handlers) mountChain(auditor *echo.Group) {
	auditor.GET("/public-key", h.auditPublicKey)
	auditor.GET("/checkpoints", h.auditCheckpoints)
	auditor.GET("/verify", h.auditVerify)
}

func (h *handlers) auditPublicKey(c echo.Context) error {
	if h.AuditKey == nil {
		return Problem(http.StatusServiceUnavailable, "no_signing_key", "this ledger signs no checkpoints (no audit signing key)")
	}
	return c.JSON(http.StatusOK, map[string]any{"algorithm": "Ed25519", "publicKey": []byte(h.AuditKey.Public().(ed25519.PublicKey))})
}

// auditCheckpoints lists signed checkpoints, newest first; ?before=COUNT
// pages to older ones, ?limit= (1..1000, default 100). Checkpoints the
// projection recorded since the last call are signed first.
func (h *handlers) auditCheckpoints(c echo.Context) error {
	ctx := c.Request().Context()
	limit, before := 100, uint64(0)
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return Problem(http.StatusBadRequest, "invalid_limit", "limit must be a whole number from 1 to 1000")
		}
		limit = n
	}
	if v := c.QueryParam("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil || n == 0 {
			return Problem(http.StatusBadRequest, "invalid_before", "before must be a positive event count")
		}
		before = n
	}
	if _, err := projections.SignCheckpoints(ctx, h.Pool, h.AuditKey); err != nil {
		return unavailable("checkpoints cannot be signed now", err)
	}
	cps, err := projections.Checkpoints(ctx, h.Pool, before, limit)
	if err != nil {
		return unavailable("the checkpoints are not readable now", err)
	}
	if cps == nil {
		cps = []projections.Checkpoint{}
	}
	return c.JSON(http.StatusOK, map[string]any{"checkpoints": cps})
}

// auditVerify recomputes the chain: of every stream of the subject when
// accountId is given, else of the whole log, compared with every
// checkpoint (which also finds events removed from the end of a stream).
func (h *handlers) auditVerify(c echo.Context) error {
	ctx := c.Request().Context()
	if v := c.QueryParam("accountId"); v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			return Problem(http.StatusBadRequest, "invalid_account_id", "accountId must be a UUID")
		}
		streams, err := projections.SubjectStreams(ctx, h.Pool, id)
		if err != nil {
			return unavailable("the subject index is not readable now", err)
		}
		if len(streams) == 0 {
			return Problem(http.StatusNotFound, "unknown_account", "no stream concerns this account")
		}
		report, err := eventstore.VerifyStreams(ctx, h.Store, streams)
		if err != nil {
			return unavailable("the event log is not readable now", err)
		}
		return c.JSON(http.StatusOK, report)
	}
	if _, err := projections.SignCheckpoints(ctx, h.Pool, h.AuditKey); err != nil {
		return unavailable("checkpoints cannot be signed now", err)
	}
	cps, err := projections.AllCheckpoints(ctx, h.Pool)
	if err != nil {
		return unavailable("the checkpoints are not readable now", err)
	}
	refs := make([]eventstore.CheckpointRef, len(cps))
	for i, cp := range cps {
		// Without a key nothing is signed: only the rolling hashes compare.
		signed := cp.Verify() || (h.AuditKey == nil && cp.Signature == nil)
		refs[i] = eventstore.CheckpointRef{Count: cp.Count, Position: cp.Position, Rolling: cp.RollingHash, Signed: signed}
	}
	report, err := eventstore.VerifyLog(ctx, h.Store, refs)
	if err != nil {
		return unavailable("the event log is not readable now", err)
	}
	return c.JSON(http.StatusOK, report)
}

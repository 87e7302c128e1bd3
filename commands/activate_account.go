package commands

import (
	"context"
	"strings"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain/account"
)

// ActivateAccount proves the owner of the address received the link.
type ActivateAccount struct {
	Token string // "<accountId>.<secret>"
}

func (h *Handler) ActivateAccount(ctx context.Context, cmd ActivateAccount) (uuid.UUID, error) {
	idPart, secret, ok := strings.Cut(cmd.Token, ".")
	id, err := uuid.Parse(idPart)
	if !ok || err != nil || secret == "" || len(cmd.Token) > 200 {
		return uuid.Nil, account.ErrInvalidActivation
	}
	a, expected, err := h.loadAccount(ctx, id)
	if err != nil {
		return uuid.Nil, err
	}
	ev, err := a.Activate(account.HashToken(secret), h.Clock.Now())
	if err != nil {
		return uuid.Nil, err
	}
	res, err := h.appendEvents(ctx, account.Stream(id), expected, typed{account.TypeActivated, ev})
	if err != nil {
		return uuid.Nil, err
	}
	h.settle(ctx, res.Position)
	return id, nil
}

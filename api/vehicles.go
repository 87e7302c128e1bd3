package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/domain/vehicle"
)

func (h *handlers) mountVehicles(user, admin *echo.Group) {
	user.POST("/v1/vehicles", h.associateVehicle)
	user.GET("/v1/vehicles", h.listVehicles)
	user.DELETE("/v1/vehicles/:vin", h.removeVehicle)
	user.POST("/v1/vehicles/:vin/services", h.subscribeService)
	user.POST("/v1/vehicles/:vin/carkey/challenge", h.challengeCarKey)
	user.POST("/v1/vehicles/:vin/carkey", h.proveCarKey)
	admin.POST("/steps/:stepsID/reset", h.adminResetSteps)
	admin.POST("/steps/reset", h.adminResetAllSteps)
}

func (h *handlers) associateVehicle(c echo.Context) error {
	var req struct {
		VIN string `json:"vin"`
	}
	if err := Bind(c, &req); err != nil {
		return err
	}
	vin, created, err := h.Commands.AssociateVehicle(c.Request().Context(), session(c).AccountID(), req.VIN)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/vehicles")
	return c.JSON(status, map[string]any{"vin": vin, "status": "associated"})
}

type serviceView struct {
	Service          string    `json:"service"`
	CarAssociationID uuid.UUID `json:"carAssociationID"`
	SubscribedAt     time.Time `json:"subscribedAt"`
}

type vehicleView struct {
	VIN          string        `json:"vin"`
	AssociatedAt time.Time     `json:"associatedAt"`
	Services     []serviceView `json:"services"`
}

func (h *handlers) listVehicles(c echo.Context) error {
	ctx := c.Request().Context()
	rows, err := h.Pool.Query(ctx, `
		SELECT v.vin, v.associated_at, s.service, s.car_association_id, s.subscribed_at
		FROM vehicles v LEFT JOIN vehicle_services s ON s.vin = v.vin AND s.account_id = v.account_id
		WHERE v.account_id = $1 ORDER BY v.vin, s.service`, session(c).AccountID())
	if err != nil {
		return err
	}
	defer rows.Close()
	out := []*vehicleView{}
	for rows.Next() {
		var vin string
		var at time.Time
		var service *string
		var id *uuid.UUID
		var subscribed *time.Time
		if err := rows.Scan(&vin, &at, &service, &id, &subscribed); err != nil {
			return err
		}
		if len(out) == 0 || out[len(out)-1].VIN != vin {
			out = append(out, &vehicleView{VIN: vin, AssociatedAt: at, Services: []serviceView{}})
		}
		if service != nil {
			v := out[len(out)-1]
			v.Services = append(v.Services, serviceView{Service: *service, CarAssociationID: *id, SubscribedAt: *subscribed})
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"vehicles": out})
}

func (h *handlers) removeVehicle(c echo.Context) error {
	if err := h.removeProperty(c.Request().Context(), session(c).AccountID(), c.Param("vin")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// removeProperty is RemoveProperty (the car was sold) and its end of
// partner access: every grant of the account that covered this car and no
// car still associated is revoked before the call returns, so a partner's
// next introspection already says inactive. Grants still covering another
// of the account's cars stay.
func (h *handlers) removeProperty(ctx context.Context, accountID uuid.UUID, rawVIN string) error {
	if err := h.Commands.RemoveProperty(ctx, accountID, rawVIN); err != nil {
		return err
	}
	vin := strings.ToUpper(strings.TrimSpace(rawVIN))
	rows, err := h.Pool.Query(ctx, `
		SELECT g.client_id FROM consents g
		WHERE g.account_id = $1 AND g.status = 'granted' AND $2 = ANY (g.vins)
		  AND NOT EXISTS (SELECT 1 FROM vehicles v WHERE v.account_id = g.account_id AND v.vin = ANY (g.vins))`, accountID, vin)
	if err != nil {
		return err
	}
	clients, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return err
	}
	for _, client := range clients {
		if err := h.Commands.RevokeAccess(ctx, accountID, client, "property-removed"); err != nil && !errors.Is(err, consent.ErrNoGrant) {
			return err
		}
	}
	return nil
}

func (h *handlers) subscribeService(c echo.Context) error {
	var req struct {
		Service string `json:"service"`
	}
	if err := Bind(c, &req); err != nil {
		return err
	}
	id, created, err := h.Commands.SubscribeService(c.Request().Context(), session(c).AccountID(), c.Param("vin"), req.Service)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return c.JSON(status, map[string]any{"carAssociationID": id, "service": req.Service, "vin": strings.ToUpper(c.Param("vin"))})
}

// challengeCarKey shows a one-time code in the car (vehicle channel).
func (h *handlers) challengeCarKey(c echo.Context) error {
	s := session(c)
	if err := h.Commands.ChallengeCarKey(c.Request().Context(), s.AccountID(), s.DeviceID(), c.Param("vin")); err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, map[string]any{"sentTo": "vehicle"})
}

// proveCarKey checks the code typed back: it completes mediumCarKey.
func (h *handlers) proveCarKey(c echo.Context) error {
	var req struct {
		Code string `json:"code"`
	}
	if err := Bind(c, &req); err != nil {
		return err
	}
	s := session(c)
	if err := h.Commands.ProveCarKey(c.Request().Context(), s.AccountID(), s.DeviceID(), c.Param("vin"), req.Code); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"vin": strings.ToUpper(c.Param("vin")), "carKey": "proven"})
}

// stepsRow is one entry of the steps cache.
type stepsRow struct {
	id               int64
	carAssociationID uuid.UUID
	account          uuid.UUID
	device           string
	service          string
	statuses         map[string]string
	ended            bool
}

var (
	errUnknownSteps  = domain.New(domain.KindNotFound, "unknown_steps", "no such stepsID or carAssociationID for this account")
	errOtherDevice   = domain.New(domain.KindForbidden, "steps_of_another_device", "this stepsID belongs to another device: start again from the carAssociationID")
	errEndedSteps    = domain.New(domain.KindConflict, "car_association_ended", "the vehicle is no longer associated with this account")
	errStepsIDFormat = domain.Invalidf("invalid_parameter", "stepsID must be a number")
)

func (h *handlers) readSteps(s *sdkCall, id int64) (*stepsRow, error) {
	r := &stepsRow{id: id}
	var phone, device string
	var carKey *string
	err := h.Pool.QueryRow(s.ctx, `
		SELECT car_association_id, account_id, device_id, service, trusted_phone, device_activation, car_key, ended
		FROM steps_cache WHERE steps_id = $1`, id).
		Scan(&r.carAssociationID, &r.account, &r.device, &r.service, &phone, &device, &carKey, &r.ended)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && r.account != s.account) {
		return nil, errUnknownSteps
	}
	if err != nil {
		return nil, err
	}
	r.statuses = map[string]string{vehicle.StepTrustedPhone: phone, vehicle.StepDeviceActivation: device}
	if carKey != nil {
		r.statuses[vehicle.StepCarKey] = *carKey
	}
	switch {
	case r.device != s.device:
		return nil, errOtherDevice
	case r.ended:
		return nil, errEndedSteps
	}
	return r, nil
}

// stepsID reads the stepsID parameter, sent as a string by the SDK's
// samples and returned as a number.
func (s *sdkCall) stepsID() (int64, bool, error) {
	raw, ok := s.params["stepsID"]
	if !ok || string(raw) == "null" {
		return 0, false, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		var str string
		if json.Unmarshal(raw, &str) != nil {
			return 0, false, &errWrongType{"stepsID", "number or string"}
		}
		n = json.Number(str)
	}
	id, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil || id <= 0 {
		return 0, false, errStepsIDFormat
	}
	return id, true, nil
}

// sdkSteps is pims.subscription.steps: by carAssociationID it gives this
// device its stepsID; by stepsID it refreshes. resetSteps wipes the cache
// entry first; stepsStatus filters.
func (h *handlers) sdkSteps(s *sdkCall) (any, error) {
	reset, err := s.boolean("resetSteps")
	if err != nil {
		return nil, err
	}
	filter, err := s.str("stepsStatus")
	if err != nil {
		return nil, err
	}
	if filter == "" {
		filter = "all"
	}
	if filter != "all" && filter != "todo" && filter != "alreadyDone" {
		return nil, domain.Invalidf("invalid_parameter", `stepsStatus must be todo, alreadyDone or all`)
	}
	id, byStepsID, err := s.stepsID()
	if err != nil {
		return nil, err
	}
	if !byStepsID {
		rawCar, err := s.required("carAssociationID")
		if err != nil {
			return nil, err
		}
		if id, err = h.mintSteps(s, rawCar); err != nil {
			return nil, err
		}
	}
	row, err := h.readSteps(s, id)
	if err != nil {
		return nil, err
	}
	if reset {
		if err := h.Commands.ResetSteps(s.ctx, row.id, row.carAssociationID, row.device); err != nil {
			return nil, err
		}
		if row, err = h.readSteps(s, id); err != nil {
			return nil, err
		}
	}
	service, _ := vehicle.ServiceFromString(row.service)
	result := map[string]any{"stepsID": row.id}
	for _, step := range vehicle.StepsOf(service) {
		if status := row.statuses[step.Name]; filter == "all" || status == filter {
			result[step.Name] = map[string]any{"name": step.Name, "status": status, "order": step.Order}
		}
	}
	return result, nil
}

func (h *handlers) mintSteps(s *sdkCall, rawCar string) (int64, error) {
	carID, err := uuid.Parse(rawCar)
	if err != nil {
		return 0, errUnknownSteps
	}
	var vin string
	var owner uuid.UUID
	err = h.Pool.QueryRow(s.ctx, `SELECT vin, account_id FROM vehicle_services WHERE car_association_id = $1`, carID).Scan(&vin, &owner)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && owner != s.account) {
		return 0, errUnknownSteps
	}
	if err != nil {
		return 0, err
	}
	return h.Commands.MintSteps(s.ctx, s.account, s.device, vin, carID)
}

// sdkNextStep is pims.subscription.step: the next todo step by order, or
// null when none is left.
func (h *handlers) sdkNextStep(s *sdkCall) (any, error) {
	id, ok, err := s.stepsID()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, domain.Invalidf("invalid_parameter", `parameter "stepsID" is required`)
	}
	row, err := h.readSteps(s, id)
	if err != nil {
		return nil, err
	}
	service, _ := vehicle.ServiceFromString(row.service)
	for _, step := range vehicle.StepsOf(service) {
		if row.statuses[step.Name] == "todo" {
			return map[string]any{step.Name: map[string]any{"name": step.Name, "status": "todo", "order": step.Order}}, nil
		}
	}
	return json.RawMessage("null"), nil
}

func (h *handlers) adminResetSteps(c echo.Context) error {
	id, err := strconv.ParseInt(c.Param("stepsID"), 10, 64)
	if err != nil {
		return Problem(http.StatusNotFound, "unknown_steps", "no such stepsID")
	}
	var carID uuid.UUID
	var device string
	err = h.Pool.QueryRow(c.Request().Context(), `SELECT car_association_id, device_id FROM steps_cache WHERE steps_id = $1`, id).Scan(&carID, &device)
	if errors.Is(err, pgx.ErrNoRows) {
		return Problem(http.StatusNotFound, "unknown_steps", "no such stepsID")
	}
	if err != nil {
		return err
	}
	if err := h.Commands.ResetSteps(c.Request().Context(), id, carID, device); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"stepsID": id, "reset": true})
}

// adminResetAllSteps wipes the whole cache, entry by entry (each reset is an
// event an auditor can see).
func (h *handlers) adminResetAllSteps(c echo.Context) error {
	ctx := c.Request().Context()
	rows, err := h.Pool.Query(ctx, `SELECT steps_id, car_association_id, device_id FROM steps_cache WHERE NOT ended ORDER BY steps_id`)
	if err != nil {
		return err
	}
	type entry struct {
		id     int64
		car    uuid.UUID
		device string
	}
	entries, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (entry, error) {
		var e entry
		return e, r.Scan(&e.id, &e.car, &e.device)
	})
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := h.Commands.ResetSteps(ctx, e.id, e.car, e.device); err != nil {
			return err
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"reset": len(entries)})
}

package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/domain"
)

// The mobile SDK gateway (seeds 001 and 002). The SDK sends
// {"api": "...", "parameters": {...}} and always reads an envelope:
// {"transactionId", "status": "SUCCEEDED", "result"} or
// {"transactionId", "status": "FAILED", "error": {"code", "message"}}, with
// HTTP 200 for every domain answer. Transport problems stay HTTP: 401
// without a valid session for this device, 400 for a malformed body or a
// parameter of the wrong JSON type.

// sdkCodes maps domain error codes to the SDK's numeric codes. 2312 and
// 2317 are the SDK's own; the README's table documents every one.
var sdkCodes = map[string]int{
	"unknown_api":              2300,
	"invalid_parameter":        2301,
	"invalid_pin":              2302,
	"invalid_phone_number":     2303,
	"pin_wrong":                2312,
	"sms_code_wrong":           2312,
	"sms_code_expired":         2313,
	"sms_code_burnt":           2314,
	"sms_code_missing":         2315,
	"sms_rate_limited":         2316,
	"account_blocked":          2317,
	"phone_already_registered": 2320,
	"no_phone_number":          2321,
	"enrollment_required":      2322,
	"enrollment_sms_missing":   2323,
	"phone_mismatch":           2324,
	"invalid_vin":              2304,
	"unknown_service":          2305,
	"unknown_vin":              2330,
	"steps_of_another_device":  2331,
	"unknown_steps":            2332,
	"unknown_car_association":  2332,
	"car_association_ended":    2333,
}

// sdkRefused is the code of a domain refusal the table does not name.
const sdkRefused = 2399

type sdkRequest struct {
	API        string                     `json:"api"`
	Parameters map[string]json.RawMessage `json:"parameters"`
}

// sdkCall is one SDK call being served.
type sdkCall struct {
	c       echo.Context
	ctx     context.Context
	account uuid.UUID
	device  string
	params  map[string]json.RawMessage
}

type sdkHandler func(*handlers, *sdkCall) (any, error)

// errWrongType marks a parameter of the wrong JSON type: a transport
// problem (HTTP 400), not a domain answer.
type errWrongType struct{ name, want string }

func (e *errWrongType) Error() string {
	return fmt.Sprintf("parameter %q must be a %s", e.name, e.want)
}

// str reads a string parameter; missing is "" (callers decide whether that
// is allowed), another JSON type is a transport error.
func (s *sdkCall) str(name string) (string, error) {
	raw, ok := s.params[name]
	if !ok || string(raw) == "null" {
		return "", nil
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", &errWrongType{name, "string"}
	}
	return v, nil
}

// required reads a string parameter that must be present.
func (s *sdkCall) required(name string) (string, error) {
	v, err := s.str(name)
	if err == nil && v == "" {
		err = domain.Invalidf("invalid_parameter", "parameter %q is required", name)
	}
	return v, err
}

// requiredAll reads several string parameters that must all be present.
func (s *sdkCall) requiredAll(names ...string) ([]string, error) {
	out := make([]string, len(names))
	for i, name := range names {
		v, err := s.required(name)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func (s *sdkCall) boolean(name string) (bool, error) {
	raw, ok := s.params[name]
	if !ok || string(raw) == "null" {
		return false, nil
	}
	var v bool
	if err := json.Unmarshal(raw, &v); err != nil {
		return false, &errWrongType{name, "boolean"}
	}
	return v, nil
}

// choice reads a parameter that selects an operation.
func (s *sdkCall) choice(name string, allowed ...string) (string, error) {
	v, err := s.required(name)
	if err != nil {
		return "", err
	}
	for _, a := range allowed {
		if v == a {
			return v, nil
		}
	}
	return "", domain.Invalidf("invalid_parameter", "parameter %q must be one of %v", name, allowed)
}

func (h *handlers) mountSDK() {
	e := h.server.Echo()
	e.POST("/pims/get", h.sdk(sdkGets), h.requireSession)
	e.POST("/pims/set", h.sdk(sdkSets), h.requireSession)
}

func (h *handlers) sdk(table map[string]sdkHandler) echo.HandlerFunc {
	return func(c echo.Context) error {
		var req sdkRequest
		if err := Bind(c, &req); err != nil {
			return err
		}
		s := session(c)
		call := &sdkCall{c: c, ctx: c.Request().Context(), account: s.AccountID(), device: s.DeviceID(), params: req.Parameters}
		txID := uuid.NewString()
		fn, ok := table[req.API]
		var result any
		var err error
		if ok {
			result, err = fn(h, call)
		} else {
			err = domain.Invalidf("unknown_api", "unknown api %q for %s", req.API, c.Path())
		}
		setCommandOutcome(c, sdkCommand(c.Path(), req.API, ok), err)
		var wrongType *errWrongType
		var de *domain.Error
		switch {
		case err == nil:
			if result == nil {
				result = struct{}{}
			}
			return c.JSON(http.StatusOK, map[string]any{"transactionId": txID, "status": "SUCCEEDED", "result": result})
		case errors.As(err, &wrongType):
			return Problem(http.StatusBadRequest, "invalid_field", wrongType.Error())
		case errors.As(err, &de) && de.Kind != domain.KindUnavailable:
			noteFailedSecret(c, de.Code)
			code, known := sdkCodes[de.Code]
			if !known {
				code = sdkRefused
			}
			body := map[string]any{"code": code, "message": de.Message}
			if de.AttemptsLeft != nil {
				body["attemptsLeft"] = *de.AttemptsLeft
			}
			if de.RetryAfter > 0 {
				c.Response().Header().Set("Retry-After", fmt.Sprint(int(de.RetryAfter.Seconds()+0.999)))
			}
			return c.JSON(http.StatusOK, map[string]any{"transactionId": txID, "status": "FAILED", "error": body})
		default:
			return err // a 5xx problem: the SDK retries transport failures
		}
	}
}

var sdkGets = map[string]sdkHandler{
	"pims.authentication.account":            (*handlers).sdkAccount,
	"pims.authentication.trustedphonenumber": (*handlers).sdkTrustedPhone,
	"pims.authentication.smscode":            (*handlers).sdkRequestCode,
	"pims.authentication.otp":                (*handlers).sdkOTP,
	"pims.subscription.steps":                (*handlers).sdkSteps,
	"pims.subscription.step":                 (*handlers).sdkNextStep,
}

var sdkSets = map[string]sdkHandler{
	"pims.authentication.smscode":    (*handlers).sdkVerifyCode,
	"pims.authentication.enrollment": (*handlers).sdkEnrollment,
	"pims.authentication.pincode":    (*handlers).sdkPincode,
	"pims.subscription.vehicle":      (*handlers).sdkVehicle,
	"pims.authentication.otp":        (*handlers).sdkOTP,
}

// sdkAccount answers isDeviceActivated and isAccountBlocked from the
// enrollment read model.
func (h *handlers) sdkAccount(s *sdkCall) (any, error) {
	if at, err := s.str("actionType"); err != nil || (at != "" && at != "strong") {
		if err == nil {
			err = domain.Invalidf("invalid_parameter", `actionType must be "strong"`)
		}
		return nil, err
	}
	typ, err := s.choice("type", "isDeviceActivated", "isAccountBlocked")
	if err != nil {
		return nil, err
	}
	if typ == "isDeviceActivated" {
		var activated bool
		err := h.Pool.QueryRow(s.ctx, `SELECT EXISTS (SELECT 1 FROM enrollment_devices WHERE account_id = $1 AND device_id = $2)`,
			s.account, s.device).Scan(&activated)
		return map[string]any{"isDeviceActivated": activated}, err
	}
	state := "NotBlocked"
	err = h.Pool.QueryRow(s.ctx, `SELECT block_state FROM enrollment_accounts WHERE account_id = $1`, s.account).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	return map[string]any{"isAccountBlocked": state}, err
}

func (h *handlers) sdkTrustedPhone(s *sdkCall) (any, error) {
	var phone *string
	err := h.Pool.QueryRow(s.ctx, `SELECT phone_number FROM enrollment_accounts WHERE account_id = $1`, s.account).Scan(&phone)
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	return map[string]any{"phoneNumber": phone}, err
}

func (h *handlers) sdkRequestCode(s *sdkCall) (any, error) {
	typ, err := s.choice("type", "phoneNumberCertification", "enrollment")
	if err != nil {
		return nil, err
	}
	phone, err := s.str("phoneNumber")
	if err != nil {
		return nil, err
	}
	return nil, h.Commands.RequestSmsCode(s.ctx, s.account, s.device, typ, phone)
}

func (h *handlers) sdkVerifyCode(s *sdkCall) (any, error) {
	action, err := s.str("action")
	if err != nil {
		return nil, err
	}
	code, err := s.required("smsCode")
	if err != nil {
		return nil, err
	}
	if action != "" {
		if action != "enrollment" {
			return nil, domain.Invalidf("invalid_parameter", `action must be "enrollment"`)
		}
		already, err := h.Commands.VerifyEnrollmentCode(s.ctx, s.account, s.device, code)
		if err != nil {
			return nil, err
		}
		status := "NotEnrolled"
		if already {
			status = "AlreadyEnrolled"
		}
		return map[string]any{"status": status}, nil
	}
	typ, err := s.choice("type", "addPhoneNumber", "modifyPhoneNumber")
	if err != nil {
		return nil, err
	}
	phone, err := s.required("phoneNumber")
	if err != nil {
		return nil, err
	}
	if typ == "addPhoneNumber" {
		return nil, h.Commands.AddPhoneNumber(s.ctx, s.account, s.device, phone, code)
	}
	return nil, h.Commands.ModifyPhoneNumber(s.ctx, s.account, s.device, phone, code)
}

func (h *handlers) sdkEnrollment(s *sdkCall) (any, error) {
	action, err := s.choice("action", "enrollWithPhoneNumber", "enroll", "remove")
	if err != nil {
		return nil, err
	}
	switch action {
	case "remove":
		return nil, h.Commands.RemoveAllEnrollments(s.ctx, s.account)
	case "enroll":
		pin, err := s.required("pinCode")
		if err != nil {
			return nil, err
		}
		if _, err := s.str("smsCode"); err != nil { // sent by iOS only; not needed
			return nil, err
		}
		if err := h.Commands.Enroll(s.ctx, s.account, s.device, pin); err != nil {
			return nil, err
		}
		// The seed's answer to enroll: the account now has this PIN.
		return map[string]any{"status": "AlreadyEnrolled"}, nil
	default:
		v, err := s.requiredAll("pinCode", "smsCode", "phoneNumber")
		if err != nil {
			return nil, err
		}
		return nil, h.Commands.EnrollWithPhoneNumber(s.ctx, s.account, s.device, v[2], v[1], v[0])
	}
}

func (h *handlers) sdkPincode(s *sdkCall) (any, error) {
	action, err := s.choice("action", "reset", "update")
	if err != nil {
		return nil, err
	}
	if action == "reset" {
		v, err := s.requiredAll("pinCode", "smsCode")
		if err != nil {
			return nil, err
		}
		return nil, h.Commands.ResetPin(s.ctx, s.account, s.device, v[1], v[0])
	}
	v, err := s.requiredAll("oldPIN", "newPIN")
	if err != nil {
		return nil, err
	}
	return nil, h.Commands.UpdatePin(s.ctx, s.account, s.device, v[0], v[1])
}

// sdkOTP is pims.authentication.otp with type withPIN: the PIN proven on an
// enrolled device buys a one-time token for remote commands.
func (h *handlers) sdkOTP(s *sdkCall) (any, error) {
	if _, err := s.choice("type", "withPIN"); err != nil {
		return nil, err
	}
	pin, err := s.required("pinCode")
	if err != nil {
		return nil, err
	}
	token, expiresAt, err := h.Commands.IssueOTP(s.ctx, s.account, s.device, pin)
	if err != nil {
		return nil, err
	}
	s.c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return map[string]any{"otp": token, "expiresAt": expiresAt}, nil
}

// sdkVehicle is E (removeProperty): the car was sold.
func (h *handlers) sdkVehicle(s *sdkCall) (any, error) {
	if _, err := s.choice("action", "removeProperty"); err != nil {
		return nil, err
	}
	vin, err := s.required("vin")
	if err != nil {
		return nil, err
	}
	return nil, h.removeProperty(s.ctx, s.account, vin)
}

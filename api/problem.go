package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/domain"
)

// ContentTypeProblem is the media type of every REST error answer (RFC 9457).
const ContentTypeProblem = "application/problem+json"

// Codes this package emits itself. Domain codes come from domain.Error.Code
// and pass through unchanged. Every code answers with the status beside it:
//
//	code                         status  when
//	bad_request                  400     a framework-level 400 without a more precise code
//	empty_body                   400     a command arrived without a body
//	malformed_json               400     the body is not one JSON object, or has trailing data
//	invalid_field                400     a field holds a value of the wrong JSON type
//	unknown_field                400     the body names a field the command does not have
//	unreadable_body              400     the body could not be read (the client went away)
//	invalid_idempotency_key      400     Idempotency-Key is empty, repeated, too long or not printable ASCII
//	unauthenticated              401     a framework-level 401
//	admin_token_invalid          401     /v1/admin/* without the admin bearer token
//	forbidden                    403     a framework-level 403
//	not_found                    404     no route serves the path
//	method_not_allowed           405     the path exists, the method does not (Allow lists the others)
//	idempotency_key_in_progress  409     the first request with this key is still running after the wait
//	body_too_large               413     the body exceeds Config.BodyLimit
//	unsupported_media_type       415     a command body that is not JSON
//	idempotency_key_reused       422     the key was used before with another method, path or body
//	too_many_requests            429     a framework-level 429
//	internal                     500     anything unexpected; the cause is logged, never shown
//	unavailable                  503     a dependency (the database) is down
//
// A domain error of kind invalid always answers 400: 422 is kept for
// idempotency_key_reused, where the request itself is well formed but cannot
// be honoured, so clients can tell "fix your input" from "pick a new key".
const (
	codeBadRequest               = "bad_request"
	codeEmptyBody                = "empty_body"
	codeMalformedJSON            = "malformed_json"
	codeInvalidField             = "invalid_field"
	codeUnknownField             = "unknown_field"
	codeUnreadableBody           = "unreadable_body"
	codeInvalidIdempotencyKey    = "invalid_idempotency_key"
	codeUnauthenticated          = "unauthenticated"
	codeAdminTokenInvalid        = "admin_token_invalid"
	codeForbidden                = "forbidden"
	codeNotFound                 = "not_found"
	codeMethodNotAllowed         = "method_not_allowed"
	codeIdempotencyKeyInProgress = "idempotency_key_in_progress"
	codeBodyTooLarge             = "body_too_large"
	codeUnsupportedMediaType     = "unsupported_media_type"
	codeIdempotencyKeyReused     = "idempotency_key_reused"
	codeTooManyRequests          = "too_many_requests"
	codeInternal                 = "internal"
	codeUnavailable              = "unavailable"
)

// ProblemDetails is the RFC 9457 body of every REST error answer. Type is the
// relative URI /problems/<code>, so clients can switch on either Type or Code.
// Instance is the request path without its query string, which may carry
// tokens. RequestID repeats the X-Request-Id header for support tickets.
type ProblemDetails struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Code      string `json:"code"`
	Instance  string `json:"instance,omitempty"`
	RequestID string `json:"requestId"`
}

// problemError is an error that already knows its answer. cause, when set,
// is logged for 5xx answers and never shown to the caller.
type problemError struct {
	status int
	code   string
	detail string
	header http.Header
	cause  error
}

func (p *problemError) Error() string {
	if p.cause != nil {
		return fmt.Sprintf("%d %s: %s: %v", p.status, p.code, p.detail, p.cause)
	}
	return fmt.Sprintf("%d %s: %s", p.status, p.code, p.detail)
}

func (p *problemError) Unwrap() error { return p.cause }

// Problem returns an error that the error handler answers with exactly this
// status, code and detail. Handlers use it for transport-level failures;
// rule breaks should be *domain.Error so that the kind → status map stays in
// one place. detail is shown to the caller: never put secrets or another
// person's data in it.
func Problem(status int, code, detail string) error {
	return &problemError{status: status, code: code, detail: detail}
}

// unavailable answers 503 and keeps cause for the log.
func unavailable(detail string, cause error) error {
	return &problemError{status: http.StatusServiceUnavailable, code: codeUnavailable, detail: detail, cause: cause}
}

// statusOfKind is the one place where domain error kinds become HTTP statuses.
var statusOfKind = map[domain.Kind]int{
	domain.KindInvalid:         http.StatusBadRequest,
	domain.KindUnauthenticated: http.StatusUnauthorized,
	domain.KindForbidden:       http.StatusForbidden,
	domain.KindNotFound:        http.StatusNotFound,
	domain.KindConflict:        http.StatusConflict,
	domain.KindTooManyAttempts: http.StatusTooManyRequests,
	domain.KindUnavailable:     http.StatusServiceUnavailable,
}

// codeOfStatus names framework errors (*echo.HTTPError) that carry only a
// status. Statuses missing here get their status text in snake case.
var codeOfStatus = map[int]string{
	http.StatusBadRequest:            codeBadRequest,
	http.StatusUnauthorized:          codeUnauthenticated,
	http.StatusForbidden:             codeForbidden,
	http.StatusNotFound:              codeNotFound,
	http.StatusMethodNotAllowed:      codeMethodNotAllowed,
	http.StatusRequestEntityTooLarge: codeBodyTooLarge,
	http.StatusUnsupportedMediaType:  codeUnsupportedMediaType,
	http.StatusTooManyRequests:       codeTooManyRequests,
	http.StatusInternalServerError:   codeInternal,
	http.StatusServiceUnavailable:    codeUnavailable,
}

// detailOfStatus explains the framework errors callers meet most.
var detailOfStatus = map[int]string{
	http.StatusNotFound:         "No resource exists at this path.",
	http.StatusMethodNotAllowed: "This path does not support the method; the Allow header lists those it does.",
}

const internalDetail = "An unexpected error occurred. Quote the requestId when reporting it."

// resolve turns any error into the answer it deserves. Unknown errors and
// domain errors of an unknown kind become 500 internal, so nothing a handler
// did not mean to show leaks into an answer.
func resolve(err error) *problemError {
	var pe *problemError
	if errors.As(err, &pe) {
		return pe
	}
	var de *domain.Error
	if errors.As(err, &de) {
		status, ok := statusOfKind[de.Kind]
		if !ok {
			return &problemError{status: http.StatusInternalServerError, code: codeInternal, detail: internalDetail, cause: err}
		}
		p := &problemError{status: status, code: de.Code, detail: de.Message}
		if status >= 500 {
			p.cause = err
		}
		if de.RetryAfter > 0 && (status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable) {
			// Whole seconds, rounded up: answering 0 would invite an
			// immediate retry that is bound to fail.
			secs := int64(math.Ceil(de.RetryAfter.Seconds()))
			p.header = http.Header{"Retry-After": {strconv.FormatInt(secs, 10)}}
		}
		return p
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return bodyTooLarge(mbe.Limit)
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		if inner, ok := he.Internal.(*echo.HTTPError); ok {
			he = inner
		}
		if he.Code >= 500 {
			return &problemError{status: he.Code, code: statusCode(he.Code), detail: internalDetail, cause: err}
		}
		detail := http.StatusText(he.Code)
		if d, ok := detailOfStatus[he.Code]; ok {
			detail = d
		}
		if m, ok := he.Message.(string); ok && m != "" && m != http.StatusText(he.Code) {
			detail = m
		}
		if he.Code == http.StatusRequestEntityTooLarge {
			return &problemError{status: he.Code, code: codeBodyTooLarge, detail: "The request body is too large."}
		}
		return &problemError{status: he.Code, code: statusCode(he.Code), detail: detail}
	}
	return &problemError{status: http.StatusInternalServerError, code: codeInternal, detail: internalDetail, cause: err}
}

func bodyTooLarge(limit int64) *problemError {
	return &problemError{
		status: http.StatusRequestEntityTooLarge,
		code:   codeBodyTooLarge,
		detail: fmt.Sprintf("The request body exceeds the limit of %d bytes.", limit),
	}
}

func statusCode(status int) string {
	if c, ok := codeOfStatus[status]; ok {
		return c
	}
	if t := http.StatusText(status); t != "" {
		return strings.ReplaceAll(strings.ToLower(strings.ReplaceAll(t, "-", " ")), " ", "_")
	}
	if status >= 500 {
		return codeInternal
	}
	return codeBadRequest
}

// handleError is the Echo HTTPErrorHandler: every error a handler or
// middleware returns is answered here as problem+json. 5xx answers are
// logged with the request id, the error and its type (and the stack for a
// recovered panic); 4xx answers are left to the access log. A response that
// is already committed cannot be changed, so the error is only logged.
func (s *Server) handleError(err error, c echo.Context) {
	p := resolve(err)
	req := c.Request()
	if p.status >= 500 {
		attrs := []any{
			slog.String("request_id", RequestID(c)),
			slog.String("method", req.Method),
			slog.String("route", routeLabel(c)),
			slog.Int("status", p.status),
			slog.String("error", err.Error()),
			slog.String("error_type", fmt.Sprintf("%T", innermost(err))),
		}
		var pe *panicError
		if errors.As(err, &pe) {
			attrs = append(attrs, slog.String("stack", string(pe.stack)))
		}
		level := slog.LevelError
		if p.status == http.StatusServiceUnavailable {
			level = slog.LevelWarn
		}
		s.log.Log(req.Context(), level, "request failed", attrs...)
	}
	if c.Response().Committed {
		if p.status < 500 {
			s.log.Warn("error after the response was committed",
				slog.String("request_id", RequestID(c)),
				slog.String("route", routeLabel(c)),
				slog.String("error", err.Error()))
		}
		return
	}
	writeProblem(c, p)
}

// innermost follows the Unwrap chain to the error that started it, whose type
// says more in a log than the wrappers around it.
func innermost(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}

// writeProblem sends p. A HEAD request gets the status and headers only.
func writeProblem(c echo.Context, p *problemError) {
	h := c.Response().Header()
	for k, vs := range p.header {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	title := http.StatusText(p.status)
	if title == "" {
		title = "Error"
	}
	body, err := json.Marshal(ProblemDetails{
		Type:      "/problems/" + p.code,
		Title:     title,
		Status:    p.status,
		Detail:    p.detail,
		Code:      p.code,
		Instance:  c.Request().URL.Path,
		RequestID: RequestID(c),
	})
	if err != nil {
		// Only strings and ints: marshalling cannot fail.
		panic(fmt.Sprintf("api: marshal problem: %v", err))
	}
	if c.Request().Method == http.MethodHead {
		h.Set(echo.HeaderContentType, ContentTypeProblem)
		_ = c.NoContent(p.status)
		return
	}
	_ = c.Blob(p.status, ContentTypeProblem, body)
}

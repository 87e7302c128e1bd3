package api

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/domain"
)

// Bind decodes a command's JSON body into dst strictly, so a client's typo
// fails loudly instead of silently dropping a field:
//
//   - a body that is empty or only whitespace → 400 empty_body;
//   - a Content-Type that is not application/json or application/*+json
//     → 415 unsupported_media_type;
//   - anything that is not one JSON value, or has data after it → 400
//     malformed_json (a JSON value that is not an object, such as an array,
//     also lands here when dst is a struct);
//   - a field of the wrong JSON type → 400 invalid_field naming the field by
//     its dotted JSON path, e.g. `field "email" must be a string`;
//   - a field dst does not have → 400 unknown_field naming it;
//   - a body over the limit → 413 body_too_large.
//
// An UnmarshalJSON method that returns a *domain.Error keeps its code.
// Field names match case-insensitively, as encoding/json does. dst must be a
// non-nil pointer; anything else is a programming error and answers 500.
func Bind(c echo.Context, dst any) error {
	req := c.Request()
	var body []byte
	if req.Body != nil {
		var err error
		body, err = io.ReadAll(req.Body)
		if err != nil {
			return readBodyError(err)
		}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return Problem(http.StatusBadRequest, codeEmptyBody, "The request body is empty; this command needs a JSON object.")
	}
	if !isJSONMediaType(req.Header.Get(echo.HeaderContentType)) {
		return Problem(http.StatusUnsupportedMediaType, codeUnsupportedMediaType, "The request body must be JSON (Content-Type: application/json).")
	}

	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Problem(http.StatusBadRequest, codeMalformedJSON, "The request body has data after the JSON value.")
	}
	return nil
}

// readBodyError maps a failed body read: over the limit is the client's
// fault and says so; anything else means the client stopped sending.
func readBodyError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return bodyTooLarge(mbe.Limit)
	}
	return &problemError{
		status: http.StatusBadRequest,
		code:   codeUnreadableBody,
		detail: "The request body could not be read completely.",
		cause:  err,
	}
}

// isJSONMediaType accepts application/json and any application/*+json
// (e.g. application/merge-patch+json), with or without parameters.
func isJSONMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == echo.MIMEApplicationJSON || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// decodeError turns an encoding/json error into the answer the caller can
// act on. The offending value is never echoed back: it may be a password.
func decodeError(err error) error {
	var (
		syntaxErr    *json.SyntaxError
		typeErr      *json.UnmarshalTypeError
		invalidErr   *json.InvalidUnmarshalError
		domainErr    *domain.Error
		maxBytesErr  *http.MaxBytesError
		unknownField string
	)
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		unknownField = name
	}
	switch {
	case errors.As(err, &invalidErr):
		return fmt.Errorf("api: bind: %w", err)
	case errors.As(err, &maxBytesErr):
		return bodyTooLarge(maxBytesErr.Limit)
	case errors.As(err, &domainErr):
		return domainErr
	case errors.As(err, &syntaxErr):
		return Problem(http.StatusBadRequest, codeMalformedJSON,
			fmt.Sprintf("The request body is not valid JSON (at byte %d).", syntaxErr.Offset))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Problem(http.StatusBadRequest, codeMalformedJSON, "The request body ends before its JSON value is complete.")
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return Problem(http.StatusBadRequest, codeMalformedJSON,
				fmt.Sprintf("The request body must be %s.", jsonTypeOf(typeErr.Type)))
		}
		return Problem(http.StatusBadRequest, codeInvalidField,
			fmt.Sprintf("field %q must be %s", typeErr.Field, jsonTypeOf(typeErr.Type)))
	case unknownField != "":
		return Problem(http.StatusBadRequest, codeUnknownField,
			fmt.Sprintf("field %s is not part of this command", unknownField))
	default:
		// An UnmarshalJSON or UnmarshalText method refused a value.
		return &problemError{
			status: http.StatusBadRequest,
			code:   codeInvalidField,
			detail: "A field holds a value of the wrong form.",
			cause:  err,
		}
	}
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// jsonTypeOf describes, for a person, the JSON a Go type decodes from.
func jsonTypeOf(t reflect.Type) string {
	if t == nil {
		return "a different type"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Implements(textUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
		return "a string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "an array"
	case reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a different type"
}

package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/domain"
)

type probeVIN string

// UnmarshalJSON refuses VINs that are not 17 characters, the way domain
// value types do.
func (v *probeVIN) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if len(s) != 17 {
		return domain.Invalidf("invalid_vin", "a VIN has 17 characters")
	}
	*v = probeVIN(s)
	return nil
}

type probeCommand struct {
	Email  string   `json:"email"`
	Age    int      `json:"age"`
	Ratio  float64  `json:"ratio"`
	Active bool     `json:"active"`
	Tags   []string `json:"tags"`
	Nested struct {
		Flag bool `json:"flag"`
	} `json:"nested"`
	VIN *probeVIN `json:"vin,omitempty"`
}

func TestBind(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	env.srv.Echo().POST("/t/bind", func(c echo.Context) error {
		var cmd probeCommand
		if err := Bind(c, &cmd); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, cmd)
	})

	tests := []struct {
		name        string
		contentType string
		body        string
		status      int
		code        string
		detail      string // substring
	}{
		{"valid", "application/json", `{"email":"a@example.org","age":3,"tags":["x"],"nested":{"flag":true}}`, 200, "", ""},
		{"valid with charset", "application/json; charset=utf-8", `{"email":"a@example.org"}`, 200, "", ""},
		{"valid +json", "application/merge-patch+json", `{"email":"a@example.org"}`, 200, "", ""},
		{"trailing whitespace", "application/json", "{\"age\":1}\n\t ", 200, "", ""},
		{"empty body", "application/json", ``, 400, codeEmptyBody, ""},
		{"whitespace body", "application/json", " \n ", 400, codeEmptyBody, ""},
		{"empty body without content type", "", ``, 400, codeEmptyBody, ""},
		{"text/plain", "text/plain", `{"email":"a"}`, 415, codeUnsupportedMediaType, ""},
		{"form", "application/x-www-form-urlencoded", `email=a`, 415, codeUnsupportedMediaType, ""},
		{"no content type", "", `{"email":"a"}`, 415, codeUnsupportedMediaType, ""},
		{"json suffix outside application", "text/foo+json", `{"email":"a"}`, 415, codeUnsupportedMediaType, ""},
		{"malformed", "application/json", `{"email":`, 400, codeMalformedJSON, ""},
		{"syntax error", "application/json", `{"email" "a"}`, 400, codeMalformedJSON, "byte"},
		{"not an object", "application/json", `["a"]`, 400, codeMalformedJSON, "an object"},
		{"trailing value", "application/json", `{"age":1}{"age":2}`, 400, codeMalformedJSON, "after"},
		{"trailing garbage", "application/json", `{"age":1} x`, 400, codeMalformedJSON, ""},
		{"string field gets number", "application/json", `{"email":42}`, 400, codeInvalidField, `field "email" must be a string`},
		{"int field gets string", "application/json", `{"age":"3"}`, 400, codeInvalidField, `field "age" must be an integer`},
		{"int field gets fraction", "application/json", `{"age":1.5}`, 400, codeInvalidField, `field "age" must be an integer`},
		{"float field gets bool", "application/json", `{"ratio":true}`, 400, codeInvalidField, `field "ratio" must be a number`},
		{"bool field gets string", "application/json", `{"active":"yes"}`, 400, codeInvalidField, `field "active" must be a boolean`},
		{"array field gets object", "application/json", `{"tags":{}}`, 400, codeInvalidField, `field "tags" must be an array`},
		{"nested field", "application/json", `{"nested":{"flag":1}}`, 400, codeInvalidField, `field "nested.flag" must be a boolean`},
		{"unknown field", "application/json", `{"email":"a","emial":"b"}`, 400, codeUnknownField, `"emial"`},
		{"unknown nested field", "application/json", `{"nested":{"flga":true}}`, 400, codeUnknownField, `"flga"`},
		{"domain error from UnmarshalJSON", "application/json", `{"vin":"short"}`, 400, "invalid_vin", "17"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			if tt.contentType != "" {
				h["Content-Type"] = tt.contentType
			}
			rec := env.do(t, request{method: http.MethodPost, target: "/t/bind", body: strings.NewReader(tt.body), header: h})
			if tt.code == "" {
				if rec.Code != tt.status {
					t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
				}
				return
			}
			p := decodeProblem(t, rec, tt.status, tt.code)
			if !strings.Contains(p.Detail, tt.detail) {
				t.Errorf("detail = %q, want it to contain %q", p.Detail, tt.detail)
			}
		})
	}
}

func TestBindNeverEchoesValues(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	env.srv.Echo().POST("/t/bind", func(c echo.Context) error {
		var cmd probeCommand
		return Bind(c, &cmd)
	})
	rec := env.do(t, jsonRequest(http.MethodPost, "/t/bind", `{"age":"hunter2"}`))
	decodeProblem(t, rec, http.StatusBadRequest, codeInvalidField)
	if strings.Contains(rec.Body.String(), "hunter2") {
		t.Errorf("answer echoes the value: %s", rec.Body)
	}
}

func TestBindRejectsNonPointer(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	var bindErr error
	env.srv.Echo().POST("/t/bind", func(c echo.Context) error {
		var cmd probeCommand
		bindErr = Bind(c, cmd)
		return bindErr
	})
	rec := env.do(t, jsonRequest(http.MethodPost, "/t/bind", `{}`))
	decodeProblem(t, rec, http.StatusInternalServerError, codeInternal)
	var inv *json.InvalidUnmarshalError
	if !errors.As(bindErr, &inv) {
		t.Errorf("Bind(non-pointer) = %v, want a wrapped *json.InvalidUnmarshalError", bindErr)
	}
}

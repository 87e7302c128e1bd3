package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/domain/vehicle"
)

// The hosted consent prompt (seed 000): sign in or sign up, activation,
// the vehicle, service activation, certification, then consent to the
// whole list of scopes. Each page is computed from the ledger's facts, so a
// step done before — for any partner — is never asked again. The flow keeps
// only the authorization request, the signed-in account and the chosen
// vehicle; it lives 10 minutes.

// AuthorizeProtocol is what the prompt needs of the OAuth2 protocol: it
// validates the authorization request the prompt was opened with, and
// answers it at the end. The prompt never sees or writes a redirect itself,
// so an unregistered redirect URI is never followed.
type AuthorizeProtocol interface {
	// Parse validates an authorization request given as its query.
	Parse(c echo.Context, query url.Values) (PromptRequest, error)
	// Fail answers a request that cannot go on: an error page when the
	// client or redirect URI cannot be trusted, else a redirect with the
	// error and state.
	Fail(c echo.Context, query url.Values, err error) error
	// Deny answers access_denied (the user declined).
	Deny(c echo.Context, query url.Values) error
	// Finish answers with the code or token for the account.
	Finish(c echo.Context, query url.Values, account uuid.UUID) error
}

// PromptRequest is what the prompt shows of a valid request.
type PromptRequest struct {
	ClientID   uuid.UUID
	ClientName string
	Scopes     []string
}

const (
	promptCookie = "ledger_prompt"
	promptTTL    = 10 * time.Minute
	// NoticeVersion is the version of the consent notice the prompt shows;
	// every grant records it.
	NoticeVersion = "2026-11-01"
)

var errFlowExpired = domain.New(domain.KindForbidden, "prompt_expired", "this consent page has expired: go back to the app and start again")

type promptFlow struct {
	hash    []byte
	csrf    string
	query   url.Values
	account uuid.UUID
	vin     string
}

func (h *handlers) mountPrompt() {
	e := h.server.Echo()
	e.GET("/oauth2/authorize", h.promptStart)
	e.GET("/oauth2/prompt", h.promptShow)
	e.POST("/oauth2/prompt", h.promptPost)
}

// promptStart validates the request, starts a flow and shows its first page.
func (h *handlers) promptStart(c echo.Context) error {
	query := c.Request().URL.Query()
	if _, err := h.authorize.Parse(c, query); err != nil {
		return h.authorize.Fail(c, query, err)
	}
	id, hash := newFlowID()
	csrf, _ := newFlowID()
	_, err := h.Pool.Exec(c.Request().Context(), `
		INSERT INTO prompt_flows (flow_hash, csrf, query, expires_at) VALUES ($1, $2, $3, now() + $4::interval)`,
		hash, csrf, query.Encode(), promptTTL.String())
	if err != nil {
		return err
	}
	c.SetCookie(&http.Cookie{Name: promptCookie, Value: id, Path: "/oauth2", HttpOnly: true,
		SameSite: http.SameSiteLaxMode, Secure: c.Scheme() == "https", MaxAge: int(promptTTL.Seconds())})
	return c.Redirect(http.StatusSeeOther, "/oauth2/prompt")
}

func newFlowID() (string, []byte) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	id := base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(id))
	return id, sum[:]
}

func (h *handlers) loadFlow(c echo.Context) (*promptFlow, error) {
	cookie, err := c.Cookie(promptCookie)
	if err != nil {
		return nil, errFlowExpired
	}
	sum := sha256.Sum256([]byte(cookie.Value))
	f := &promptFlow{hash: sum[:]}
	var query string
	var vin *string
	var acct *uuid.UUID
	err = h.Pool.QueryRow(c.Request().Context(), `
		SELECT csrf, query, account_id, vin FROM prompt_flows WHERE flow_hash = $1 AND expires_at > now()`, f.hash).
		Scan(&f.csrf, &query, &acct, &vin)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errFlowExpired
	}
	if err != nil {
		return nil, err
	}
	if f.query, err = url.ParseQuery(query); err != nil {
		return nil, err
	}
	if acct != nil {
		f.account = *acct
	}
	if vin != nil {
		f.vin = *vin
	}
	return f, nil
}

func (h *handlers) saveFlow(ctx context.Context, f *promptFlow) error {
	var vin *string
	if f.vin != "" {
		vin = &f.vin
	}
	var acct *uuid.UUID
	if f.account != uuid.Nil {
		acct = &f.account
	}
	_, err := h.Pool.Exec(ctx, `UPDATE prompt_flows SET account_id = $2, vin = $3 WHERE flow_hash = $1`, f.hash, acct, vin)
	return err
}

func (h *handlers) endFlow(ctx context.Context, f *promptFlow) {
	_, _ = h.Pool.Exec(ctx, `DELETE FROM prompt_flows WHERE flow_hash = $1`, f.hash)
}

// promptShow renders the page of the flow's current step.
func (h *handlers) promptShow(c echo.Context) error {
	f, err := h.loadFlow(c)
	if err != nil {
		return h.promptError(c, err)
	}
	req, err := h.authorize.Parse(c, f.query)
	if err != nil {
		return h.authorize.Fail(c, f.query, err)
	}
	return h.promptRender(c, f, req, page{})
}

// promptPost handles every form of the prompt; `action` names the form.
func (h *handlers) promptPost(c echo.Context) error {
	f, err := h.loadFlow(c)
	if err != nil {
		return h.promptError(c, err)
	}
	if subtle.ConstantTimeCompare([]byte(c.FormValue("csrf")), []byte(f.csrf)) != 1 {
		return h.promptError(c, domain.New(domain.KindForbidden, "csrf", "this form has expired: reload the page"))
	}
	req, err := h.authorize.Parse(c, f.query)
	if err != nil {
		return h.authorize.Fail(c, f.query, err)
	}
	ctx := c.Request().Context()
	switch c.FormValue("action") {
	case "signin":
		id, err := h.Commands.SignInToPrompt(ctx, c.FormValue("email"), c.FormValue("password"))
		switch {
		case errors.Is(err, account.ErrNotActivated):
			return h.promptRender(c, f, req, page{Step: "activation"})
		case err != nil && domain.KindOf(err) != "" && domain.KindOf(err) != domain.KindUnavailable:
			noteFailedSecret(c, domainCode(err))
			return h.promptRender(c, f, req, page{Step: "signin", Error: message(err), Email: c.FormValue("email")})
		case err != nil:
			return err
		}
		f.account = id
	case "signup":
		_, err := h.Commands.RegisterAccount(ctx, commands.RegisterAccount{Email: c.FormValue("email"), Password: c.FormValue("password")})
		if err != nil {
			if domain.KindOf(err) == "" || domain.KindOf(err) == domain.KindUnavailable {
				return err
			}
			return h.promptRender(c, f, req, page{Step: "signup", Error: message(err), Email: c.FormValue("email")})
		}
		return h.promptRender(c, f, req, page{Step: "activation"})
	case "show-signup":
		return h.promptRender(c, f, req, page{Step: "signup"})
	case "vehicle":
		if f.account == uuid.Nil {
			break
		}
		f.vin = c.FormValue("vin")
	case "activate":
		if f.account == uuid.Nil || f.vin == "" {
			break
		}
		for _, s := range servicesFor(req.Scopes) {
			if _, _, err := h.Commands.SubscribeService(ctx, f.account, f.vin, s.String()); err != nil {
				return err
			}
		}
	case "consent":
		if f.account == uuid.Nil {
			break
		}
		st, err := h.promptStep(ctx, f, req)
		if err != nil {
			return err
		}
		if st.Step != "consent" {
			break // not everything is done: show what is left
		}
		accept := c.FormValue("decision") == "accept"
		var vins []string
		if f.vin != "" {
			vins = []string{f.vin}
		}
		if _, err := h.Commands.DecideConsent(ctx, commands.ConsentDecision{AccountID: f.account, ClientID: req.ClientID,
			Accept: accept, Scopes: req.Scopes, VINs: vins, NoticeVersion: NoticeVersion, CollectionMethod: "hosted-consent-prompt"}); err != nil {
			return err
		}
		h.endFlow(ctx, f)
		if !accept {
			return h.authorize.Deny(c, f.query)
		}
		return h.authorize.Finish(c, f.query, f.account)
	}
	if err := h.saveFlow(ctx, f); err != nil {
		return err
	}
	return h.promptRender(c, f, req, page{})
}

func message(err error) string {
	var de *domain.Error
	if errors.As(err, &de) {
		return de.Message
	}
	return "something went wrong"
}

// servicesFor lists the connected services the scopes need.
func servicesFor(scopes []string) []vehicle.Service {
	var out []vehicle.Service
	if slices.Contains(scopes, consent.ScopeVehicleStatus) {
		out = append(out, vehicle.VehicleStatus)
	}
	if slices.Contains(scopes, consent.ScopeVehicleRemote) {
		out = append(out, vehicle.RemoteCommands)
	}
	return out
}

// page is what one prompt page shows.
type page struct {
	Step     string // signin, signup, activation, no-vehicle, vehicle, services, certification, consent
	Error    string
	Email    string
	Client   string
	CSRF     string
	Vehicles []string
	VIN      string
	Missing  []string // services to activate, or certification items
	Scopes   []string // in plain words
}

// promptStep computes the first step not done yet, from the ledger's facts.
func (h *handlers) promptStep(ctx context.Context, f *promptFlow, req PromptRequest) (page, error) {
	if f.account == uuid.Nil {
		return page{Step: "signin"}, nil
	}
	needed := servicesFor(req.Scopes)
	if len(needed) > 0 {
		rows, err := h.Pool.Query(ctx, `SELECT vin FROM vehicles WHERE account_id = $1 ORDER BY vin`, f.account)
		if err != nil {
			return page{}, err
		}
		vins, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return page{}, err
		}
		if !slices.Contains(vins, f.vin) {
			f.vin = ""
		}
		switch {
		case len(vins) == 0:
			return page{Step: "no-vehicle"}, nil
		case len(vins) == 1:
			f.vin = vins[0]
		case f.vin == "":
			return page{Step: "vehicle", Vehicles: vins}, nil
		}
		var missing []string
		for _, s := range needed {
			var ok bool
			if err := h.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM vehicle_services WHERE account_id = $1 AND vin = $2 AND service = $3)`,
				f.account, f.vin, s.String()).Scan(&ok); err != nil {
				return page{}, err
			}
			if !ok {
				missing = append(missing, s.String())
			}
		}
		if len(missing) > 0 {
			return page{Step: "services", VIN: f.vin, Missing: missing}, nil
		}
		if missing, err := h.certificationMissing(ctx, f.account, f.vin, slices.Contains(needed, vehicle.RemoteCommands)); err != nil || len(missing) > 0 {
			return page{Step: "certification", VIN: f.vin, Missing: missing}, err
		}
	}
	return page{Step: "consent", VIN: f.vin}, nil
}

// certificationMissing lists what the manufacturer app must still do:
// trusted phone, safety code (PIN), device pairing, and the car key for
// remote commands.
func (h *handlers) certificationMissing(ctx context.Context, acct uuid.UUID, vin string, carKey bool) ([]string, error) {
	var phone, pin, device, key bool
	err := h.Pool.QueryRow(ctx, `
		SELECT coalesce((SELECT phone_number IS NOT NULL FROM enrollment_accounts WHERE account_id = $1), false),
		       coalesce((SELECT pin_set FROM enrollment_accounts WHERE account_id = $1), false),
		       EXISTS (SELECT 1 FROM enrollment_devices WHERE account_id = $1),
		       EXISTS (SELECT 1 FROM steps_fact_carkeys WHERE account_id = $1 AND vin = $2)`, acct, vin).
		Scan(&phone, &pin, &device, &key)
	if err != nil {
		return nil, err
	}
	var missing []string
	if !phone {
		missing = append(missing, "Verify a trusted phone number in the manufacturer app.")
	}
	if !pin {
		missing = append(missing, "Define your safety code (PIN) in the manufacturer app.")
	}
	if !device {
		missing = append(missing, "Pair your phone: enroll it in the manufacturer app.")
	}
	if carKey && !key {
		missing = append(missing, "Prove you hold the car key: in the manufacturer app, type the code shown in the car.")
	}
	return missing, nil
}

var scopeWords = map[string]string{
	consent.ScopeProfile:       "Your account profile: your e-mail address and the state of your account.",
	consent.ScopeVehicleStatus: "Your vehicle's status: identification, fuel and battery levels, preconditioning and door state.",
	consent.ScopeVehicleRemote: "Remote commands on your vehicle: lock and unlock, horn and lights, charging and preconditioning.",
}

func (h *handlers) promptRender(c echo.Context, f *promptFlow, req PromptRequest, p page) error {
	if p.Step == "" {
		st, err := h.promptStep(c.Request().Context(), f, req)
		if err != nil {
			return err
		}
		if err := h.saveFlow(c.Request().Context(), f); err != nil {
			return err
		}
		p = st
	}
	p.Client, p.CSRF = req.ClientName, f.csrf
	for _, s := range req.Scopes {
		p.Scopes = append(p.Scopes, scopeWords[s])
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	c.Response().Header().Set("X-Frame-Options", "DENY")
	// form-action also governs the redirect that answers a form post, so
	// the (already validated, registered) redirect URI's origin is allowed.
	formAction := "'self'"
	if u, err := url.Parse(f.query.Get("redirect_uri")); err == nil && u.Scheme != "" && u.Host != "" {
		formAction += " " + u.Scheme + "://" + u.Host
	}
	c.Response().Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action "+formAction+"; frame-ancestors 'none'")
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMETextHTMLCharsetUTF8)
	c.Response().WriteHeader(http.StatusOK)
	return promptPage.Execute(c.Response(), p)
}

// promptError shows an error the user can act on (an expired flow, a stale
// form) as a page, not JSON: a person is reading.
func (h *handlers) promptError(c echo.Context, err error) error {
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMETextHTMLCharsetUTF8)
	c.Response().WriteHeader(http.StatusForbidden)
	return promptPage.Execute(c.Response(), page{Step: "error", Error: message(err)})
}

// PurgePromptFlows deletes expired consent-prompt flows and portal
// sessions: browser state that outlived its use.
func (s *Server) PurgePromptFlows(ctx context.Context) (int64, error) {
	if s.pool == nil {
		return 0, nil
	}
	flows, err := s.pool.Exec(ctx, `DELETE FROM prompt_flows WHERE expires_at < now()`)
	if err != nil {
		return 0, err
	}
	sessions, err := s.pool.Exec(ctx, `DELETE FROM portal_sessions WHERE expires_at < now()`)
	return flows.RowsAffected() + sessions.RowsAffected(), err
}

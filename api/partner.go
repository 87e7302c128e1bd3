package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"
	"github.com/ory/fosite"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/domain/vehicle"
)

// The partner API (/v1/partner/*), for Accessing Parties holding an access
// token of this service's OAuth2 provider:
//
//	POST /v1/partner/accounts                      create an account (seed 003, scenario 1); client credentials, accounts:create
//	POST /v1/partner/accounts/{accountId}/notice   the partner told the person who holds their data
//	GET  /v1/partner/consents?accountId=           this client's grants
//	GET  /v1/partner/accounts/{accountId}/steps    service-activation steps of a car, for accounts that granted a vehicle scope
//
// A client-credentials token speaks for the client; a token from the code
// grant speaks for the client on behalf of one account (its subject), and
// reads only what concerns that account.

// partnerCollectionMethod records, on the grant, that the partner collected
// the consent when it created the account, not the hosted prompt.
const partnerCollectionMethod = "partner-provisioned"

const partnerRealm = `Bearer realm="ledger-partner"`

// partnerCaller is who a partner request's bearer token stands for.
type partnerCaller struct {
	clientID uuid.UUID
	subject  uuid.UUID // uuid.Nil for client credentials
	scopes   []string
}

const partnerKey = "ledger.partner"

func partnerOf(c echo.Context) *partnerCaller { return c.Get(partnerKey).(*partnerCaller) }

var (
	// errPartnerUnknownAccount is the one answer for an account the caller
	// may not see, whether or not it exists: telling them apart would let a
	// client probe which ids are accounts.
	errPartnerUnknownAccount = domain.New(domain.KindNotFound, "unknown_account", "no such account among those that granted this client access")
	errUnknownCarAssociation = domain.New(domain.KindNotFound, "unknown_car_association", "no such carAssociationID on this account")
	errNoCodeGrant           = domain.New(domain.KindForbidden, "unauthorized_client",
		"this client cannot receive codes for the accounts it creates: it needs the authorization_code grant, a redirect URI and a user scope besides accounts:create")
)

// mountPartner registers the partner API behind bearer authentication by o.
func (h *handlers) mountPartner(o *oauthProvider) {
	p := &partnerAPI{handlers: h, oauth: o}
	g := h.server.Echo().Group("/v1/partner", p.requireToken)
	g.POST("/accounts", p.createAccount)
	g.POST("/accounts/:accountId/notice", p.confirmNotice)
	g.GET("/consents", p.consents)
	g.GET("/accounts/:accountId/steps", p.steps)
}

type partnerAPI struct {
	*handlers
	oauth *oauthProvider
}

// requireToken accepts an active access token of the provider, checked
// through fosite's introspection on the ledger's storage at every request:
// a revocation, an expiry or the end of the grant behind the token takes
// effect on the very next call, as it does at /oauth2/introspect. A refresh
// token is not a bearer credential and is refused like an unknown one.
func (p *partnerAPI) requireToken(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		token, ok := bearerToken(c.Request())
		if !ok {
			return &problemError{status: http.StatusUnauthorized, code: codeUnauthenticated,
				detail: "This endpoint needs an OAuth2 access token: Authorization: Bearer <token>.",
				header: http.Header{"Www-Authenticate": {partnerRealm}}}
		}
		ctx := c.Request().Context()
		use, ar, err := p.oauth.fosite.IntrospectToken(ctx, token, fosite.AccessToken, newSession(""))
		if err != nil || use != fosite.AccessToken {
			// fosite reports a storage failure as an unknown token; a
			// partner told "invalid token" would throw a good one away.
			if perr := p.Pool.Ping(ctx); perr != nil {
				return unavailable("the token store is not reachable", perr)
			}
			return &problemError{status: http.StatusUnauthorized, code: "invalid_token",
				detail: "The access token is unknown, expired or revoked.",
				header: http.Header{"Www-Authenticate": {partnerRealm + `, error="invalid_token"`}}}
		}
		caller := &partnerCaller{scopes: ar.GetGrantedScopes()}
		if caller.clientID, err = uuid.Parse(ar.GetClient().GetID()); err != nil {
			return err
		}
		if sub := ar.GetSession().GetSubject(); sub != "" {
			if caller.subject, err = uuid.Parse(sub); err != nil {
				return err
			}
		}
		c.Set(partnerKey, caller)
		c.SetRequest(c.Request().WithContext(commands.WithActor(ctx, "client:"+caller.clientID.String())))
		return next(c)
	}
}

// requireClientScope admits a client-credentials token granted scope:
// what it guards acts for the client itself, never on behalf of a user.
func requireClientScope(c echo.Context, scope string) (*partnerCaller, error) {
	caller := partnerOf(c)
	if caller.subject != uuid.Nil || !slices.Contains(caller.scopes, scope) {
		return nil, &problemError{status: http.StatusForbidden, code: "insufficient_scope",
			detail: "This endpoint needs a client-credentials access token with the scope " + scope + ".",
			header: http.Header{"Www-Authenticate": {partnerRealm + `, error="insufficient_scope", scope="` + scope + `"`}}}
	}
	return caller, nil
}

// partnerAccountRequest is the seed's account creation request.
type partnerAccountRequest struct {
	FirstName string `json:"firstName"`
	LastName  string `json:"lastName"`
	Email     string `json:"email"`
	Username  string `json:"username"`
	Password  string `json:"password"`
}

// partnerAccount is the seed's account, field for field; what the ledger
// does not keep (zipcode, phone, time zone, preferred contact) is null.
type partnerAccount struct {
	ID               uuid.UUID          `json:"id"`
	FirstName        *string            `json:"firstName"`
	LastName         *string            `json:"lastName"`
	Username         *string            `json:"username"`
	DateCreated      string             `json:"dateCreated"`
	Email            string             `json:"email"`
	Zipcode          *string            `json:"zipcode"`
	Phone            *string            `json:"phone"`
	TimeZone         *string            `json:"timeZone"`
	PreferredContact *string            `json:"preferredContact"`
	AccessToken      partnerAccountCode `json:"accessToken"`
}

type partnerAccountCode struct {
	Code string `json:"code"`
}

// seedDateLayout is the basic ISO 8601 form of the seed's dateCreated
// ("20141112T195503+0000"), which partners' integrations parse.
const seedDateLayout = "20060102T150405-0700"

// createAccount is scenario 1 of seed 003: the partner creates the account,
// the ledger records the grant the partner collected (every user scope the
// client is registered for, collection method partner-provisioned) and
// answers an authorization code for it, which the partner redeems at
// /oauth2/token with its credentials and its first redirect URI. The
// account stays "notice pending" until the partner confirms it told the
// person (POST …/notice).
//
// Everything the answer depends on is checked before the account is
// created, so a refusal leaves nothing behind. A failure after it (the
// ledger unreachable) leaves the account; the partner retries with the
// same Idempotency-Key.
func (p *partnerAPI) createAccount(c echo.Context) error {
	caller, err := requireClientScope(c, consent.ScopeAccountsCreate)
	if err != nil {
		return err
	}
	var req partnerAccountRequest
	if err := Bind(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	client, err := p.oauth.store.GetClient(ctx, caller.clientID.String())
	if err != nil {
		return err
	}
	oc := client.(*oauthClient)
	var scopes []string
	for _, s := range oc.scopes {
		if s != consent.ScopeAccountsCreate {
			scopes = append(scopes, s)
		}
	}
	if len(scopes) == 0 || len(oc.redirectURIs) == 0 || !slices.Contains(oc.grantTypes, "authorization_code") {
		return errNoCodeGrant
	}

	id, created, err := p.Commands.ProvisionAccount(ctx, commands.ProvisionAccount{ClientID: caller.clientID,
		Email: req.Email, Password: req.Password, FirstName: req.FirstName, LastName: req.LastName, Username: req.Username})
	if err != nil {
		return err
	}
	if _, err := p.Commands.DecideConsent(ctx, commands.ConsentDecision{AccountID: id, ClientID: caller.clientID, Accept: true,
		Scopes: scopes, NoticeVersion: NoticeVersion, CollectionMethod: partnerCollectionMethod}); err != nil {
		return err
	}
	code, err := p.oauth.issueCode(ctx, oc, oc.redirectURIs[0], id, scopes)
	if err != nil {
		return err
	}
	email, _ := account.NormalizeEmail(req.Email) // as ProvisionAccount kept it: it accepted it
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusCreated, map[string]any{
		"account": partnerAccount{ID: id, FirstName: orNull(req.FirstName), LastName: orNull(req.LastName), Username: orNull(req.Username),
			DateCreated: created.UTC().Format(seedDateLayout), Email: email, AccessToken: partnerAccountCode{Code: code}},
		"totalRecords": 1,
	})
}

func orNull(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// confirmNotice records that the partner told the person who created the
// account holds their data (the seed's obligation). Another client's
// account, or none, is 404 alike.
func (p *partnerAPI) confirmNotice(c echo.Context) error {
	caller, err := requireClientScope(c, consent.ScopeAccountsCreate)
	if err != nil {
		return err
	}
	id, err := uuid.Parse(c.Param("accountId"))
	if err != nil {
		return errPartnerUnknownAccount
	}
	if err := p.Commands.ConfirmNotice(c.Request().Context(), caller.clientID, id); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// partnerConsentView is one grant as its client sees it.
type partnerConsentView struct {
	AccountID        uuid.UUID  `json:"accountId"`
	Status           string     `json:"status"`
	Scopes           []string   `json:"scopes"`
	VINs             []string   `json:"vins"`
	NoticeVersion    string     `json:"noticeVersion"`
	CollectionMethod string     `json:"collectionMethod"`
	GrantedAt        *time.Time `json:"grantedAt"`
	RevokedAt        *time.Time `json:"revokedAt"`
}

const (
	defaultPartnerPage = 100
	maxPartnerPage     = 1000
)

// consents lists this client's grants from the consents read model
// (commands wait for it, so a revocation shows at once), ordered by account
// id and paged by it: `after` is the last accountId of the previous page,
// which `next` gives while more may follow. A token issued for an account
// sees that account's grant only.
func (p *partnerAPI) consents(c echo.Context) error {
	caller := partnerOf(c)
	var only, after *uuid.UUID
	if raw := c.QueryParam("accountId"); raw != "" {
		id, err := uuid.Parse(raw)
		if err != nil {
			return domain.Invalidf("invalid_parameter", "accountId must be an account id (UUID)")
		}
		only = &id
	}
	if caller.subject != uuid.Nil {
		if only != nil && *only != caller.subject {
			return c.JSON(http.StatusOK, map[string]any{"consents": []partnerConsentView{}})
		}
		only = &caller.subject
	}
	if raw := c.QueryParam("after"); raw != "" {
		id, err := uuid.Parse(raw)
		if err != nil {
			return domain.Invalidf("invalid_parameter", "after must be the accountId the previous page ended with")
		}
		after = &id
	}
	limit := defaultPartnerPage
	if raw := c.QueryParam("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > maxPartnerPage {
			return domain.Invalidf("invalid_parameter", "limit must be 1 to %d", maxPartnerPage)
		}
		limit = n
	}
	rows, err := p.Pool.Query(c.Request().Context(), `
		SELECT account_id, status, scopes, vins, notice_version, collection_method, granted_at, revoked_at
		FROM consents
		WHERE client_id = $1 AND ($2::uuid IS NULL OR account_id = $2) AND ($3::uuid IS NULL OR account_id > $3)
		ORDER BY account_id LIMIT $4`, caller.clientID, only, after, limit)
	if err != nil {
		return err
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (partnerConsentView, error) {
		var v partnerConsentView
		return v, r.Scan(&v.AccountID, &v.Status, &v.Scopes, &v.VINs, &v.NoticeVersion, &v.CollectionMethod, &v.GrantedAt, &v.RevokedAt)
	})
	if err != nil {
		return err
	}
	out := map[string]any{"consents": list}
	if list == nil {
		out["consents"] = []partnerConsentView{}
	}
	if len(list) == limit {
		out["next"] = list[len(list)-1].AccountID
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, out)
}

// vehicleScopes are the scopes that open a car's data to a partner.
var vehicleScopes = []string{consent.ScopeVehicleStatus, consent.ScopeVehicleRemote}

// steps answers the service-activation steps of one of the account's car
// associations, for a client the account granted a vehicle scope (covering
// that car, when the grant names cars; a partner-provisioned grant names
// none, the account having no car yet). The statuses come from the facts
// the steps projection keeps (steps_fact_*), not from an SDK device's
// cache entry, which a partner does not have: trusterPhoneNumber is done
// when the account has a trusted phone, deviceActivation when one of its
// devices is enrolled, mediumCarKey (remoteCommands only) when the car key
// was proven for the account and the car.
func (p *partnerAPI) steps(c echo.Context) error {
	caller := partnerOf(c)
	acct, err := uuid.Parse(c.Param("accountId"))
	if err != nil || (caller.subject != uuid.Nil && caller.subject != acct) {
		return errPartnerUnknownAccount
	}
	filter := c.QueryParam("status")
	if filter == "" {
		filter = "all"
	}
	if filter != "all" && filter != "todo" && filter != "alreadyDone" {
		return domain.Invalidf("invalid_parameter", "status must be todo, alreadyDone or all")
	}
	rawCar := c.QueryParam("carAssociationID")
	if rawCar == "" {
		return domain.Invalidf("invalid_parameter", `parameter "carAssociationID" is required`)
	}
	ctx := c.Request().Context()
	var vins []string
	err = p.Pool.QueryRow(ctx, `SELECT vins FROM consents WHERE account_id = $1 AND client_id = $2 AND status = 'granted' AND scopes && $3`,
		acct, caller.clientID, vehicleScopes).Scan(&vins)
	if errors.Is(err, pgx.ErrNoRows) {
		return errPartnerUnknownAccount
	}
	if err != nil {
		return err
	}
	car, err := uuid.Parse(rawCar)
	if err != nil {
		return errUnknownCarAssociation
	}
	st, err := p.stepFacts(ctx, acct, car)
	if err != nil {
		return err
	}
	if len(vins) > 0 && !slices.Contains(vins, st.vin) {
		return errUnknownCarAssociation
	}
	service, err := vehicle.ServiceFromString(st.service)
	if err != nil {
		return err
	}
	out := map[string]any{"carAssociationID": car, "service": st.service}
	for _, step := range vehicle.StepsOf(service) {
		status := "todo"
		if st.done[step.Name] {
			status = "alreadyDone"
		}
		if filter == "all" || filter == status {
			out[step.Name] = map[string]any{"name": step.Name, "status": status, "order": step.Order}
		}
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, out)
}

type stepFacts struct {
	vin, service string
	done         map[string]bool
}

// stepFacts reads a car association of the account and the facts of its
// steps in one statement, so the answer is of one instant.
func (p *partnerAPI) stepFacts(ctx context.Context, acct, car uuid.UUID) (*stepFacts, error) {
	st := &stepFacts{}
	var phone, device, carKey bool
	err := p.Pool.QueryRow(ctx, `
		SELECT s.vin, s.service,
			EXISTS (SELECT 1 FROM steps_fact_phones f WHERE f.account_id = s.account_id),
			EXISTS (SELECT 1 FROM steps_fact_devices f WHERE f.account_id = s.account_id),
			EXISTS (SELECT 1 FROM steps_fact_carkeys f WHERE f.account_id = s.account_id AND f.vin = s.vin)
		FROM vehicle_services s WHERE s.car_association_id = $1 AND s.account_id = $2`, car, acct).
		Scan(&st.vin, &st.service, &phone, &device, &carKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errUnknownCarAssociation
	}
	if err != nil {
		return nil, err
	}
	st.done = map[string]bool{vehicle.StepTrustedPhone: phone, vehicle.StepDeviceActivation: device, vehicle.StepCarKey: carKey}
	return st, nil
}

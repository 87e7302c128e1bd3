package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/api"
	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

// enrollResult is the shortcut-enrollment row of the report.
type enrollResult struct {
	clients int
	result
}

// enrollSession is a signed-in device.
type enrollSession struct {
	n                    int
	account              uuid.UUID
	token, device, phone string
	stepsID              int64
}

// measureEnrollment serves the whole API over HTTP, as `ledger serve` does
// (projections running, commands waiting for them, default argon2id cost
// for codes and PINs), and has clients complete shortcut enrollments: an
// SMS request (pims.get smscode phoneNumberCertification) then
// enrollWithPhoneNumber with the code from the outbox. Accounts and
// sessions are made beforehand and not measured.
func measureEnrollment(ctx context.Context, cfg Config, srv *benchServer) (enrollResult, error) {
	need := cfg.EnrollAccounts
	sessions, err := srv.prepare(ctx, need, func(_ context.Context, s enrollSession) (enrollSession, error) { return s, nil })
	if err != nil {
		return enrollResult{}, err
	}
	queue := make(chan enrollSession, len(sessions))
	for _, s := range sessions {
		queue <- s
	}
	close(queue)
	r, err := measure(ctx, cfg.EnrollClients, cfg.Warmup, cfg.Duration, func(int) func(context.Context) error {
		return func(ctx context.Context) error {
			s, ok := <-queue
			if !ok {
				return fmt.Errorf("all %d prepared accounts are enrolled: raise -enroll-accounts", need)
			}
			if _, err := srv.sdk(ctx, "/pims/get", s, "pims.authentication.smscode",
				map[string]any{"type": "phoneNumberCertification", "phoneNumber": s.phone}); err != nil {
				return err
			}
			msgs := srv.outbox.List(s.phone)
			if len(msgs) == 0 {
				return fmt.Errorf("no SMS sent to %s", s.phone)
			}
			_, err := srv.sdk(ctx, "/pims/set", s, "pims.authentication.enrollment", map[string]any{
				"action": "enrollWithPhoneNumber", "pinCode": "424242", "smsCode": msgs[0].Code, "phoneNumber": s.phone})
			return err
		}
	})
	return enrollResult{clients: cfg.EnrollClients, result: r}, err
}

// measureSteps has clients refresh their steps list by stepsID, the
// mobile app's hottest query. Each client has its own account, car,
// service and stepsID.
func measureSteps(ctx context.Context, cfg Config, srv *benchServer) (enrollResult, error) {
	sessions, err := srv.prepare(ctx, cfg.StepsClients, func(ctx context.Context, s enrollSession) (enrollSession, error) {
		vin := fmt.Sprintf("VF1BENCH%09d", s.n)
		if _, _, err := srv.setup.AssociateVehicle(ctx, s.account, vin); err != nil {
			return s, err
		}
		car, _, err := srv.setup.SubscribeService(ctx, s.account, vin, "remoteCommands")
		if err != nil {
			return s, err
		}
		if s.stepsID, err = srv.setup.MintSteps(ctx, s.account, s.device, vin, car); err != nil {
			return s, err
		}
		return s, nil
	})
	if err != nil {
		return enrollResult{}, err
	}
	r, err := measure(ctx, cfg.StepsClients, cfg.Warmup, cfg.Duration, func(i int) func(context.Context) error {
		s := sessions[i]
		return func(ctx context.Context) error {
			_, err := srv.sdk(ctx, "/pims/get", s, "pims.subscription.steps",
				map[string]any{"stepsID": fmt.Sprint(s.stepsID), "resetSteps": false, "stepsStatus": "all"})
			return err
		}
	})
	return enrollResult{clients: cfg.StepsClients, result: r}, err
}

const benchAdminToken = "bench-admin-token-0123456789"

// benchServer is the whole API over HTTP, as `ledger serve` wires it
// (projections running, commands waiting for them, default argon2id cost
// for codes and PINs).
type benchServer struct {
	url    string
	client *http.Client
	outbox *commands.MemoryOutbox
	setup  *commands.Handler // cheap password hashing: signing up is not measured
	codes  *api.CodeIssuer   // authorization codes for the code-exchange row
	stop   func()
	// accounts numbers every prepared account, so rows never share one.
	accounts atomic.Int64
}

func startBenchServer(ctx context.Context, pool *pgxpool.Pool, store eventstore.Store, logger *slog.Logger) *benchServer {
	runner := projections.NewRunner(pool, store, logger, nil,
		projections.Accounts{}, projections.Enrollment{}, projections.Vehicles{}, projections.Steps{},
		projections.Clients{}, projections.Consents{}, projections.OAuthTokens{})
	tokens := projections.NewTokenValidity(pool, store, logger)
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = runner.Run(rctx) })
	wg.Go(func() { _ = tokens.Run(rctx) })
	// The projections and the token model start from position 0 of a log
	// the throughput rows filled: let them catch up first, so no row
	// measures that catch-up (and no command times out waiting for it), and
	// let the token model answer from memory.
	consistency := projections.Consistency{runner, tokens}
	if head, err := store.Head(ctx); err == nil {
		wctx, stop := context.WithTimeout(ctx, 5*time.Minute)
		if err := consistency.WaitFor(wctx, head); err != nil {
			logger.Warn("projections did not catch up before the HTTP rows", "error", err)
		}
		for !tokens.Serving() && wctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		stop()
	}

	outbox := commands.NewMemoryOutbox(100_000)
	h := commands.New(commands.Deps{Store: store, Outbox: outbox, Consistency: consistency, Logger: logger})
	server := api.New(api.Config{AdminToken: benchAdminToken}, api.Deps{Pool: pool, Logger: logger})
	api.Mount(server, api.App{Commands: h, Pool: pool, Store: store, Runner: runner, Tokens: tokens})
	srv := httptest.NewServer(server.Handler())
	codes := api.NewCodeIssuer(server.Config(), api.App{Commands: h, Pool: pool, Store: store, Runner: runner, Tokens: tokens}, logger)
	return &benchServer{
		codes:  codes,
		url:    srv.URL,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		outbox: outbox,
		setup: commands.New(commands.Deps{Store: store, Outbox: outbox, Consistency: consistency, Logger: logger,
			PasswordParams: account.PasswordParams{Memory: 1024, Time: 1, Threads: 1}}),
		stop: func() { srv.Close(); cancel(); wg.Wait() },
	}
}

// prepare signs up, activates and signs in n accounts (8 at a time), then
// runs more on each session.
func (b *benchServer) prepare(ctx context.Context, n int, more func(context.Context, enrollSession) (enrollSession, error)) ([]enrollSession, error) {
	out := make([]enrollSession, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				s, err := enrollSetup(ctx, b.setup, b.outbox, int(b.accounts.Add(1)))
				if err == nil {
					s, err = more(ctx, s)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				out[i] = s
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("prepare accounts: %w", firstErr)
	}
	return out, ctx.Err()
}

func enrollSetup(ctx context.Context, h *commands.Handler, outbox *commands.MemoryOutbox, i int) (enrollSession, error) {
	email := fmt.Sprintf("bench-%d@example.com", i)
	const password = "Bench-Password-1"
	if _, err := h.RegisterAccount(ctx, commands.RegisterAccount{Email: email, Password: password}); err != nil {
		return enrollSession{}, err
	}
	if _, err := h.ActivateAccount(ctx, commands.ActivateAccount{Token: outbox.List(email)[0].Code}); err != nil {
		return enrollSession{}, err
	}
	device := fmt.Sprintf("device-%d", i)
	s, err := h.OpenSession(ctx, commands.OpenSession{Email: email, Password: password, DeviceID: device})
	if err != nil {
		return enrollSession{}, err
	}
	return enrollSession{n: i, account: s.AccountID, token: s.SessionToken, device: device, phone: fmt.Sprintf("06%08d", i)}, nil
}

// sdk posts one SDK call and requires a SUCCEEDED answer.
func (b *benchServer) sdk(ctx context.Context, path string, s enrollSession, apiName string, params map[string]any) ([]byte, error) {
	body, _ := json.Marshal(map[string]any{"api": apiName, "parameters": params})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("X-Device-Id", s.device)
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &env); err != nil || resp.StatusCode != 200 || env.Status != "SUCCEEDED" {
		return nil, fmt.Errorf("%s: HTTP %d %s", apiName, resp.StatusCode, raw)
	}
	return raw, nil
}

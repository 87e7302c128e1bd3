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

// enrollSession is a signed-in device ready to enroll.
type enrollSession struct {
	token, device, phone string
}

// measureEnrollment serves the whole API over HTTP, as `ledger serve` does
// (projections running, commands waiting for them, default argon2id cost
// for codes and PINs), and has clients complete shortcut enrollments: an
// SMS request (pims.get smscode phoneNumberCertification) then
// enrollWithPhoneNumber with the code from the outbox. Accounts and
// sessions are made beforehand and not measured.
func measureEnrollment(ctx context.Context, cfg Config, pool *pgxpool.Pool, store eventstore.Store, logger *slog.Logger) (enrollResult, error) {
	runner := projections.NewRunner(pool, store, logger, nil, projections.Accounts{}, projections.Enrollment{})
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { _ = runner.Run(rctx) })
	defer wg.Wait()
	defer stop()

	outbox := commands.NewMemoryOutbox(100_000)
	h := commands.New(commands.Deps{Store: store, Outbox: outbox, Consistency: runner, Logger: logger})
	server := api.New(api.Config{AdminToken: "bench-admin-token-0123456789"}, api.Deps{Pool: pool, Logger: logger})
	api.Mount(server, api.App{Commands: h, Pool: pool, Store: store, Runner: runner})
	srv := httptest.NewServer(server.Handler())
	defer srv.Close()

	// Accounts are set up with a cheap password hash: signing up is not
	// what this row measures.
	setup := commands.New(commands.Deps{Store: store, Outbox: outbox, Consistency: runner, Logger: logger,
		PasswordParams: account.PasswordParams{Memory: 1024, Time: 1, Threads: 1}})
	need := cfg.EnrollAccounts
	sessions := make(chan enrollSession, need)
	var next atomic.Int64
	var setupErr error
	var once sync.Once
	var swg sync.WaitGroup
	for range 8 {
		swg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(need) || ctx.Err() != nil {
					return
				}
				s, err := enrollSetup(ctx, setup, outbox, int(i))
				if err != nil {
					once.Do(func() { setupErr = err })
					return
				}
				sessions <- s
			}
		})
	}
	swg.Wait()
	if setupErr != nil {
		return enrollResult{}, fmt.Errorf("set up accounts: %w", setupErr)
	}
	close(sessions)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.EnrollClients * 2}}
	r, err := measure(ctx, cfg.EnrollClients, cfg.Warmup, cfg.Duration, func(int) func(context.Context) error {
		return func(ctx context.Context) error {
			s, ok := <-sessions
			if !ok {
				return fmt.Errorf("all %d prepared accounts are enrolled: raise -enroll-accounts", need)
			}
			if err := sdkCall(ctx, client, srv.URL+"/pims/get", s, "pims.authentication.smscode",
				map[string]string{"type": "phoneNumberCertification", "phoneNumber": s.phone}); err != nil {
				return err
			}
			msgs := outbox.List(s.phone)
			if len(msgs) == 0 {
				return fmt.Errorf("no SMS sent to %s", s.phone)
			}
			return sdkCall(ctx, client, srv.URL+"/pims/set", s, "pims.authentication.enrollment", map[string]string{
				"action": "enrollWithPhoneNumber", "pinCode": "424242", "smsCode": msgs[0].Code, "phoneNumber": s.phone})
		}
	})
	return enrollResult{clients: cfg.EnrollClients, result: r}, err
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
	return enrollSession{token: s.SessionToken, device: device, phone: fmt.Sprintf("06%08d", i)}, nil
}

// sdkCall posts one SDK call and requires a SUCCEEDED answer.
func sdkCall(ctx context.Context, client *http.Client, url string, s enrollSession, apiName string, params map[string]string) error {
	body, _ := json.Marshal(map[string]any{"api": apiName, "parameters": params})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("X-Device-Id", s.device)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &env); err != nil || resp.StatusCode != 200 || env.Status != "SUCCEEDED" {
		return fmt.Errorf("%s: HTTP %d %s", apiName, resp.StatusCode, raw)
	}
	return nil
}

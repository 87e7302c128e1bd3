package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/domain/enrollment"
	"github.com/consentledger/ledger/eventstore"
)

// TokenValidity is the token-validity read model kept in memory, one per
// instance: every OAuth2 code and token (keyed by fosite's signature, the
// HMAC-SHA512/256 of the token under the server's key — a fast keyed hash of
// a 256-bit random value, never the token), the partner clients with their
// secret hashes, the grants that stand and the accounts that are blocked.
// It tails the event log from the start, as a projection does, and uses the
// events' time, never the clock, so what it holds is a function of the log.
// The OAuth2 endpoints answer from it; introspection then costs no database
// round trip.
//
// Nothing makes a token inactive without an event: a revocation, a rotation
// or use, the grant's revocation (by the user, or RemoveProperty of the
// only car it covers), the account's block. Commands wait (WaitFor) until
// this instance's model and that of every other live instance include their
// append, so after the command returns no instance answers for a token it
// ended. Instances publish the position they reached, with a heartbeat, in
// token_cache_instances; one that cannot refresh its heartbeat stops
// answering from memory (its callers fall back to the database read models)
// before other instances stop waiting for it, and catches up with the log's
// head before it answers from memory again.
//
// An instance also answers from memory only while it keeps up: once per
// heartbeat it reads the head of the log, and it must have applied the head
// it read the time before. One that falls behind by more than about two
// seconds answers from the database until it has caught up, so a command
// that gave up waiting for it after 3 s finds it no longer answering.
//
// A code, token or client that is not in memory (issued a moment ago by
// another instance, or expired more than an hour ago) is read from the
// database: a miss is never taken as an answer.
type TokenValidity struct {
	pool  *pgxpool.Pool
	store eventstore.Store
	log   *slog.Logger
	id    uuid.UUID

	// Lease is how old another instance's heartbeat may be for commands to
	// wait for it (default 5 s). StaleAfter is how long after its last
	// successful heartbeat an instance keeps answering from memory (default
	// 2 s; less than Lease, so that nobody stops waiting for an instance
	// that still answers, and less than the commands' 3 s wait).
	// HeartbeatEvery (default 1 s) is also how often the model compares
	// itself with the head of the log; PollEvery (default 2 ms) is how
	// often a waiting command looks at other instances.
	Lease, StaleAfter, HeartbeatEvery, PollEvery time.Duration

	// OnErased, when set, is called with the account of each
	// account.erased.v1 the model applies, before its position moves past
	// the event: a command that waited for this instance (WaitFor) up to
	// the erasure, or past it, returns only once it has run here. ledger
	// serve drops the account's data key from the instance's keyring with
	// it. It runs under the model's lock, so it must be quick and must not
	// call the model; it may run again for the same event after a retry.
	OnErased func(account uuid.UUID)

	mu         sync.RWMutex
	pos        eventstore.Position
	tokens     map[string]*OAuthToken
	clients    map[uuid.UUID]*OAuthClient
	grants     map[grantKey]grantState
	blocked    map[uuid.UUID]bool
	failing    error
	freshUntil time.Time           // the heartbeat is fresh until then
	catchUp    eventstore.Position // to reach before answering again
	lastHead   eventstore.Position // the head of the log at the last look
	sweptAt    time.Time           // event time of the last sweep
	headReadAt time.Time

	progress *eventstore.Broadcast
	changed  chan struct{}
}

// OAuthToken is a code or token as the model holds it. Its slices are never
// changed once stored.
type OAuthToken struct {
	Kind, RequestID, GrantType, Status                                 string
	ClientID                                                           uuid.UUID
	AccountID                                                          *uuid.UUID
	RequestedScopes, GrantedScopes, RequestedAudience, GrantedAudience []string
	RedirectURI, CodeChallenge, CodeChallengeMethod                    string
	RequestedAt, ExpiresAt, IssuedAt                                   time.Time
}

// OAuthClient is a registered partner client; SecretHash is the SHA-256
// (hex) of a confidential client's secret.
type OAuthClient struct {
	ID                               uuid.UUID
	Name                             string
	RedirectURIs, Scopes, GrantTypes []string
	Implicit, Public                 bool
	SecretHash                       string
}

type grantKey struct{ account, client uuid.UUID }

type grantState struct {
	granted   bool
	grantedAt time.Time
}

// NewTokenValidity makes the model of one instance; Run feeds it. pool
// holds token_cache_instances; nil runs the model alone (no other instance
// is waited for).
func NewTokenValidity(pool *pgxpool.Pool, store eventstore.Store, logger *slog.Logger) *TokenValidity {
	if logger == nil {
		logger = slog.Default()
	}
	return &TokenValidity{
		pool: pool, store: store, log: logger, id: uuid.Must(uuid.NewV7()),
		Lease: 5 * time.Second, StaleAfter: 2 * time.Second, HeartbeatEvery: time.Second, PollEvery: 2 * time.Millisecond,
		tokens: map[string]*OAuthToken{}, clients: map[uuid.UUID]*OAuthClient{},
		grants: map[grantKey]grantState{}, blocked: map[uuid.UUID]bool{},
		progress: eventstore.NewBroadcast(), changed: make(chan struct{}, 1),
	}
}

// Token returns the code or token of a signature. served is false when the
// model cannot answer — it does not hold the signature, or is not current —
// and the caller must read the database. found is false for a token of an
// account whose grant to the client (as given before the token was issued)
// no longer stands, or which is blocked: such a token does not exist as far
// as the protocol is concerned, as in the database read.
func (m *TokenValidity) Token(sig string) (t OAuthToken, found, served bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.servingLocked() {
		return OAuthToken{}, false, false
	}
	p, ok := m.tokens[sig]
	if !ok {
		return OAuthToken{}, false, false
	}
	if p.AccountID != nil {
		g := m.grants[grantKey{*p.AccountID, p.ClientID}]
		if !g.granted || g.grantedAt.After(p.IssuedAt) || m.blocked[*p.AccountID] {
			return OAuthToken{}, false, true
		}
	}
	return *p, true, true
}

// Client returns a registered client; served is false when the model
// cannot answer (unknown here, or not current).
func (m *TokenValidity) Client(id uuid.UUID) (c OAuthClient, served bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.servingLocked() {
		return OAuthClient{}, false
	}
	p, ok := m.clients[id]
	if !ok {
		return OAuthClient{}, false
	}
	return *p, true
}

// Serving reports whether the model answers: it applied the log without a
// failure, its heartbeat is fresh, and it reached the head of the log it
// read at its previous look (or, after a lapse, at the heartbeat that ended
// it).
func (m *TokenValidity) Serving() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.servingLocked()
}

func (m *TokenValidity) servingLocked() bool {
	if m.failing != nil || m.pos.Less(m.catchUp) {
		return false
	}
	return m.pool == nil || time.Now().Before(m.freshUntil)
}

// Position is what the model has applied.
func (m *TokenValidity) Position() eventstore.Position {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.pos
}

// Run feeds the model from the log until ctx ends, and publishes its
// position and heartbeat. A batch it cannot apply stops it at the event
// before (it answers nothing from memory meanwhile) and is retried.
func (m *TokenValidity) Run(ctx context.Context) error {
	if m.pool == nil {
		// Alone: it answers once it reached the head as of its start.
		head, err := m.store.Head(ctx)
		if err != nil {
			return fmt.Errorf("token validity: head of the log: %w", err)
		}
		m.mu.Lock()
		m.catchUp = head
		m.mu.Unlock()
	} else {
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() { m.publish(ctx) })
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		sub, err := m.store.SubscribeAll(ctx, m.Position())
		if err != nil {
			m.log.Error("token validity: subscription failed", "error", err)
			sleep(ctx, time.Second)
			continue
		}
		for {
			evs, err := sub.Next(ctx)
			if err != nil {
				if ctx.Err() == nil {
					m.log.Warn("token validity: subscription interrupted; resubscribing", "error", err)
					sleep(ctx, 100*time.Millisecond)
				}
				break
			}
			if err := m.apply(evs); err != nil {
				m.log.Error("token validity: stopped on an event; retrying", "error", err)
				sleep(ctx, backoff)
				backoff = min(backoff*2, 30*time.Second)
				break
			}
			backoff = 100 * time.Millisecond
		}
		_ = sub.Close()
	}
	return nil
}

// apply applies a batch in order; an event it cannot apply ends the batch
// there, with the position of the event before.
func (m *TokenValidity) apply(evs []eventstore.RecordedEvent) error {
	m.mu.Lock()
	var err error
	for _, ev := range evs {
		if err = m.applyEvent(ev); err != nil {
			err = &ApplyError{Event: ev, Err: err}
			break
		}
		m.pos = ev.Position
		m.sweep(ev.Metadata.OccurredAt)
	}
	m.failing = err
	m.mu.Unlock()
	m.progress.Signal()
	select {
	case m.changed <- struct{}{}:
	default:
	}
	return err
}

func (m *TokenValidity) applyEvent(ev eventstore.RecordedEvent) error {
	switch ev.Type {
	case account.TypeErased:
		if m.OnErased == nil {
			return nil
		}
		payload, err := account.Decode(ev.Type, ev.Data)
		if err != nil {
			return err
		}
		m.OnErased(payload.(*account.Erased).AccountID)
		return nil
	case enrollment.TypeAccountBlocked, enrollment.TypeEnrollmentsRemoved:
		id, err := uuid.Parse(strings.TrimPrefix(ev.StreamID, "enrollment-"))
		if err != nil {
			return err
		}
		payload, err := enrollment.Decode(ev.Type, ev.Data)
		if err != nil {
			return err
		}
		switch e := payload.(type) {
		case *enrollment.Blocked:
			m.blocked[id] = e.State != "" && e.State != "NotBlocked"
		case *enrollment.EnrollmentsRemoved:
			delete(m.blocked, id)
		}
		return nil
	case consent.TypeClientRegistered, consent.TypeClientSecretRotated, consent.TypeGranted, consent.TypeRevoked,
		consent.TypeCodeIssued, consent.TypeTokenIssued, consent.TypeCodeUsed, consent.TypeRefreshTokenRotated, consent.TypeTokenRevoked:
	default:
		return nil
	}
	payload, err := consent.Decode(ev.Type, ev.Data)
	if err != nil {
		return err
	}
	at := ev.Metadata.OccurredAt
	switch e := payload.(type) {
	case *consent.ClientRegistered:
		m.clients[e.ClientID] = &OAuthClient{ID: e.ClientID, Name: e.Name, RedirectURIs: nonNil(e.RedirectURIs), Scopes: nonNil(e.Scopes),
			GrantTypes: nonNil(e.GrantTypes), Implicit: e.ImplicitAllowed, Public: e.Public, SecretHash: e.SecretHash}
	case *consent.ClientSecretRotated:
		if c := m.clients[e.ClientID]; c != nil {
			updated := *c
			updated.SecretHash = e.SecretHash
			m.clients[e.ClientID] = &updated
		}
	case *consent.Granted:
		m.grants[grantKey{e.AccountID, e.ClientID}] = grantState{granted: true, grantedAt: at}
	case *consent.Revoked:
		delete(m.grants, grantKey{e.AccountID, e.ClientID})
	case *consent.CodeIssued:
		m.issue(e.Signature, consent.KindAuthorizeCode, e.TokenGrant, e.RedirectURI, e.CodeChallenge, e.CodeChallengeMethod, at)
	case *consent.TokenIssued:
		m.issue(e.Signature, e.Kind, e.TokenGrant, "", "", "", at)
	case *consent.CodeUsed:
		m.end(e.Signature, "used")
	case *consent.RefreshTokenRotated:
		m.end(e.Signature, "rotated")
		for _, s := range e.SupersededSignatures {
			m.end(s, "revoked")
		}
	case *consent.TokenRevoked:
		for _, s := range e.Signatures {
			m.end(s, "revoked")
		}
	}
	return nil
}

func (m *TokenValidity) issue(sig, kind string, g consent.TokenGrant, redirect, challenge, method string, at time.Time) {
	m.tokens[sig] = &OAuthToken{
		Kind: kind, RequestID: g.RequestID, GrantType: g.GrantType, Status: "active",
		ClientID: g.ClientID, AccountID: g.AccountID,
		RequestedScopes: nonNil(g.RequestedScopes), GrantedScopes: nonNil(g.GrantedScopes),
		RequestedAudience: nonNil(g.RequestedAudience), GrantedAudience: nonNil(g.GrantedAudience),
		RedirectURI: redirect, CodeChallenge: challenge, CodeChallengeMethod: method,
		RequestedAt: g.RequestedAt, ExpiresAt: g.ExpiresAt, IssuedAt: at,
	}
}

// forgetAfter is how long after its expiry a code or token stays in
// memory. Forgotten, it is read from the database, which answers that it
// expired: memory holds what is alive, not the whole history.
const forgetAfter = time.Hour

// sweep forgets, every ten minutes of the log's time, the codes and tokens
// that expired more than forgetAfter before at (an event's time, so what
// the model holds stays a function of the log).
func (m *TokenValidity) sweep(at time.Time) {
	if at.Sub(m.sweptAt) < 10*time.Minute {
		return
	}
	m.sweptAt = at
	for sig, t := range m.tokens {
		if t.ExpiresAt.Before(at.Add(-forgetAfter)) {
			delete(m.tokens, sig)
		}
	}
}

// end changes the status of an active code or token; stored entries are
// replaced, never changed, so readers may keep a copy without the lock.
func (m *TokenValidity) end(sig, status string) {
	if t := m.tokens[sig]; t != nil && t.Status == "active" {
		updated := *t
		updated.Status = status
		m.tokens[sig] = &updated
	}
}

// WaitFor returns once this instance's model and that of every other live
// instance have applied the log up to pos (or this one is stopped on a
// failing event: waiting for it would hang). Commands call it, through
// Consistency, before they answer.
func (m *TokenValidity) WaitFor(ctx context.Context, pos eventstore.Position) error {
	for {
		woken := m.progress.Wait()
		m.mu.RLock()
		reached := m.failing != nil || !m.pos.Less(pos)
		m.mu.RUnlock()
		if reached {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("token validity: this instance: %w", ctx.Err())
		case <-woken:
		}
	}
	if m.pool == nil {
		return nil
	}
	for {
		lagging, err := m.lagging(ctx, pos)
		if err != nil {
			return err
		}
		if len(lagging) == 0 {
			return nil
		}
		t := time.NewTimer(m.PollEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("token validity: instances %v have not reached %s: %w", lagging, pos, ctx.Err())
		case <-t.C:
		}
	}
}

// lagging lists the other live instances that have not reached pos.
func (m *TokenValidity) lagging(ctx context.Context, pos eventstore.Position) ([]uuid.UUID, error) {
	rows, err := m.pool.Query(ctx, `
		SELECT instance_id, commit_pos, prepare_pos FROM token_cache_instances
		WHERE instance_id <> $1 AND heartbeat_at > now() - make_interval(secs => $2)`, m.id, m.Lease.Seconds())
	if err != nil {
		return nil, fmt.Errorf("token validity: instances: %w", err)
	}
	defer rows.Close()
	var out []uuid.UUID
	for rows.Next() {
		var id uuid.UUID
		var commit, prepare int64
		if err := rows.Scan(&id, &commit, &prepare); err != nil {
			return nil, err
		}
		if (eventstore.Position{Commit: uint64(commit), Prepare: uint64(prepare)}).Less(pos) {
			out = append(out, id)
		}
	}
	return out, rows.Err()
}

// minPublishInterval spaces the writes of a model's position when the log
// is busy: waiting commands poll, so a few milliseconds are all they lose.
const minPublishInterval = 2 * time.Millisecond

// publish keeps this instance's row current: its position whenever it
// moves, a heartbeat at least every HeartbeatEvery. Once a heartbeat is
// written, the model answers from memory until StaleAfter after the
// moment the write was started; a model whose heartbeat had gone stale (or
// that just started) first catches up with the head of the log as read
// after the heartbeat: commands that ran meanwhile may not have waited for
// it. The row is deleted when ctx ends.
func (m *TokenValidity) publish(ctx context.Context) {
	tick := time.NewTicker(m.HeartbeatEvery)
	defer tick.Stop()
	defer func() {
		// Stop answering before the row goes: commands stop waiting for
		// this instance once it is gone.
		m.mu.Lock()
		m.freshUntil = time.Time{}
		m.mu.Unlock()
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = m.pool.Exec(dctx, `DELETE FROM token_cache_instances WHERE instance_id = $1`, m.id)
	}()
	for {
		started := time.Now()
		pos := m.Position()
		_, err := m.pool.Exec(ctx, `
			INSERT INTO token_cache_instances (instance_id, commit_pos, prepare_pos, heartbeat_at, started_at)
			VALUES ($1, $2, $3, now(), now())
			ON CONFLICT (instance_id) DO UPDATE SET commit_pos = $2, prepare_pos = $3, heartbeat_at = now()`,
			m.id, int64(pos.Commit), int64(pos.Prepare))
		if err == nil {
			err = m.refreshed(ctx, started)
		}
		if err != nil && ctx.Err() == nil {
			m.log.Warn("token validity: heartbeat failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-m.changed:
			sleep(ctx, minPublishInterval)
		case <-tick.C:
		}
	}
}

// refreshed extends the model's right to answer after a heartbeat started
// at started was written, and keeps the model honest about its lag: at most
// once per HeartbeatEvery it reads the head of the log, and from then on
// answers only once it has applied the head read the time before. A model
// that falls behind the log by more than about two heartbeats thus stops
// answering from memory before a command waiting for it gives up, even
// though its heartbeat is fresh.
func (m *TokenValidity) refreshed(ctx context.Context, started time.Time) error {
	// Judged when the write is done: if the model stopped answering at any
	// moment before, commands may have stopped waiting for it meanwhile.
	m.mu.RLock()
	stale := !time.Now().Before(m.freshUntil)
	due := time.Since(m.headReadAt) >= m.HeartbeatEvery
	m.mu.RUnlock()
	var head eventstore.Position
	if stale || due {
		var err error
		if head, err = m.store.Head(ctx); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if stale || due {
		target := m.lastHead
		if stale {
			target = head
		}
		if m.catchUp.Less(target) {
			m.catchUp = target
		}
		m.lastHead, m.headReadAt = head, time.Now()
	}
	m.freshUntil = started.Add(m.StaleAfter)
	return nil
}

// Consistency waits for several read models: commands take one, and the
// projection runner and the in-memory token model are two.
type Consistency []interface {
	WaitFor(ctx context.Context, pos eventstore.Position) error
}

// WaitFor waits for each in turn; nil members are skipped.
func (c Consistency) WaitFor(ctx context.Context, pos eventstore.Position) error {
	var errs []error
	for _, w := range c {
		if w == nil {
			continue
		}
		if err := w.WaitFor(ctx, pos); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

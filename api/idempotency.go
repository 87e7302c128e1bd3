package api

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
)

const (
	// HeaderIdempotencyKey names the client's key for a command.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderIdempotentReplayed marks an answer replayed from the store.
	HeaderIdempotentReplayed = "Idempotent-Replayed"

	maxIdempotencyKeyLen = 255

	// idemLease is how long a running request owns its key. A request whose
	// process died is taken over once the lease has passed; a handler that
	// runs longer than the lease may see a retry run it a second time, so
	// command handlers must stay well below it.
	idemLease = 30 * time.Second
	// idemWait and idemPoll bound how a retry waits for the first request
	// with its key to finish.
	idemWait = 10 * time.Second
	idemPoll = 20 * time.Millisecond
	// idemWriteTimeout bounds recording an answer after the handler ran; it
	// does not depend on the client still being connected.
	idemWriteTimeout = 5 * time.Second

	// Domain separation for the hashes and the sealing key, so none of them
	// can be confused with a hash computed elsewhere in the ledger.
	idemScopeLabel   = "consent-ledger/idempotency/scope/v1"
	idemRequestLabel = "consent-ledger/idempotency/request/v1"
	idemSealInfo     = "consent-ledger/idempotency/answer/v1"
)

// capturedHeaders are the answer headers a replay repeats. The others (the
// request id, Retry-After, dates) describe the moment, not the answer.
var capturedHeaders = []string{echo.HeaderContentType, echo.HeaderLocation}

// The store's SQL, in one place. Lease arithmetic uses the database clock
// only, so instances with skewed clocks agree on who owns a key. The
// locked_until value a claim returns doubles as a fencing token: finishing or
// releasing a key requires it, so a request whose lease was taken over can
// no longer overwrite or delete the new owner's row.
const (
	sqlIdemClaim = `
INSERT INTO idempotency_keys (key_hash, request_hash, state, locked_until)
VALUES ($1, $2, 'running', now() + $3::bigint * interval '1 microsecond')
ON CONFLICT (key_hash) DO NOTHING
RETURNING locked_until`

	sqlIdemLoad = `
SELECT request_hash, state, status, sealed, locked_until < now()
FROM idempotency_keys
WHERE key_hash = $1`

	sqlIdemTakeOver = `
UPDATE idempotency_keys
SET locked_until = now() + $3::bigint * interval '1 microsecond'
WHERE key_hash = $1 AND request_hash = $2 AND state = 'running' AND locked_until < now()
RETURNING locked_until`

	sqlIdemFinish = `
UPDATE idempotency_keys
SET state = 'done', status = $3, sealed = $4
WHERE key_hash = $1 AND state = 'running' AND locked_until = $2`

	sqlIdemRelease = `
DELETE FROM idempotency_keys
WHERE key_hash = $1 AND state = 'running' AND locked_until = $2`

	sqlIdemPurge = `
DELETE FROM idempotency_keys
WHERE created_at < now() - $1::bigint * interval '1 microsecond'
  AND (state = 'done' OR locked_until < now())`
)

// idempotency is the store behind the Idempotency-Key header.
type idempotency struct {
	pool  *pgxpool.Pool
	lease time.Duration
	wait  time.Duration
	poll  time.Duration
	// onWait, when set, is called once by each request that starts waiting
	// for another request with its key (tests use it to force overlap).
	onWait func()
}

func newIdempotency(pool *pgxpool.Pool) *idempotency {
	return &idempotency{pool: pool, lease: idemLease, wait: idemWait, poll: idemPoll}
}

// idemKeys are what one request with an Idempotency-Key is stored under.
type idemKeys struct {
	keyHash     []byte // SHA-256 of the scope: the row's primary key
	requestHash []byte // SHA-256 of method, path with query, and body
	sealKey     []byte // AES-256 key of the stored answer; never stored
}

// deriveIdemKeys computes the row key, the request fingerprint and the
// sealing key of a request.
//
// The scope is method, route template, actual path, SHA-256 of the
// Authorization header and the key, each length-prefixed so no two
// different scopes serialise alike. Hashing Authorization means two callers
// never share an answer even when they pick the same key, and the
// credential itself never reaches the table.
//
// The sealing key is HKDF-SHA256 with the Idempotency-Key as secret, the
// digest of the scope without the key as salt, and a fixed label as info.
// The table never holds the Idempotency-Key, so a dump of it cannot open an
// answer (session tokens, client secrets) unless the key is guessed: that is
// as strong as the client's keys are random, which is why keys should be
// UUIDs or similar.
func deriveIdemKeys(method, route, path, query, authorization, key string, body []byte) (idemKeys, error) {
	authSum := sha256.Sum256([]byte(authorization))

	scope := sha256.New()
	writeFields(scope, []byte(idemScopeLabel), []byte(method), []byte(route), []byte(path), authSum[:])
	salt := scope.Sum(nil)
	writeFields(scope, []byte(key))
	keyHash := scope.Sum(nil)

	req := sha256.New()
	writeFields(req, []byte(idemRequestLabel), []byte(method), []byte(path), []byte(query), body)

	sealKey, err := hkdf.Key(sha256.New, []byte(key), salt, idemSealInfo, 32)
	if err != nil {
		return idemKeys{}, fmt.Errorf("api: derive idempotency sealing key: %w", err)
	}
	return idemKeys{keyHash: keyHash, requestHash: req.Sum(nil), sealKey: sealKey}, nil
}

// writeFields writes each field with a 4-byte length prefix.
func writeFields(h hash.Hash, fields ...[]byte) {
	var n [4]byte
	for _, f := range fields {
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
}

// isCommand reports whether a method changes state and so honours
// Idempotency-Key. GET and friends are idempotent already.
func isCommand(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// parseIdempotencyKey accepts exactly one value of 1..255 printable ASCII
// characters (space to tilde). A repeated header is refused rather than
// guessed at.
func parseIdempotencyKey(values []string) (string, error) {
	if len(values) != 1 || values[0] == "" || len(values[0]) > maxIdempotencyKeyLen {
		return "", Problem(http.StatusBadRequest, codeInvalidIdempotencyKey,
			"Idempotency-Key must be sent once, with 1 to 255 printable ASCII characters.")
	}
	for i := 0; i < len(values[0]); i++ {
		if b := values[0][i]; b < 0x20 || b > 0x7e {
			return "", Problem(http.StatusBadRequest, codeInvalidIdempotencyKey,
				"Idempotency-Key must be sent once, with 1 to 255 printable ASCII characters.")
		}
	}
	return values[0], nil
}

// idempotent makes every command (POST, PUT, PATCH, DELETE) sent with an
// Idempotency-Key run at most once per scope: the first request runs the
// handler and stores its answer; a retry with the same key and the same
// request gets that answer again with Idempotent-Replayed: true; the same
// key with another request answers 422 idempotency_key_reused. A retry that
// arrives while the first request runs waits for it (up to 10 s, then 409
// idempotency_key_in_progress with Retry-After). Answers of 500 and above
// are not stored, so a retry runs the command again. Requests without the
// header, other methods and unmatched routes pass straight through.
//
// It runs before route middleware such as RequireAdmin, so a refused
// credential is an answer like any other and is replayed too; the scope
// includes the Authorization header, so fixing the credential gets a fresh
// run.
func (s *Server) idempotent(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		values, present := req.Header[HeaderIdempotencyKey]
		if s.idem == nil || !present || !isCommand(req.Method) || unmatched(c) {
			return next(c)
		}
		key, err := parseIdempotencyKey(values)
		if err != nil {
			return err
		}
		var body []byte
		if req.Body != nil {
			if body, err = io.ReadAll(req.Body); err != nil {
				return readBodyError(err)
			}
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
		k, err := deriveIdemKeys(req.Method, c.Path(), req.URL.EscapedPath(), req.URL.RawQuery,
			req.Header.Get(echo.HeaderAuthorization), key, body)
		if err != nil {
			return err
		}
		c.Set(idempotencyScopeKey, k.commandScope())
		return s.idem.serve(c, next, k, s.log)
	}
}

const idempotencyScopeKey = "ledger.idempotency-scope"

// commandScope names this request among all requests: the same caller,
// route, path, Idempotency-Key and body give the same scope, anything else
// another. Commands derive retry-stable event ids from it.
func (k idemKeys) commandScope() string {
	sum := sha256.New()
	writeFields(sum, k.keyHash, k.requestHash)
	return hex.EncodeToString(sum.Sum(nil))
}

// idempotencyScope is the command scope of a request sent with an
// Idempotency-Key ("" without one).
func idempotencyScope(c echo.Context) string {
	scope, _ := c.Get(idempotencyScopeKey).(string)
	return scope
}

// idemRow is a stored key as a retry sees it.
type idemRow struct {
	requestHash []byte
	state       string
	status      *int32
	sealed      []byte
	expired     bool
}

// serve claims the key and runs the handler, or answers from the stored row.
// The loop ends on a claim, a take-over, a verdict about the stored row, or
// the wait deadline; a row that vanishes between the failed claim and the
// read (the first request failed with a 5xx) is simply claimed again.
func (st *idempotency) serve(c echo.Context, next echo.HandlerFunc, k idemKeys, log *slog.Logger) error {
	ctx := c.Request().Context()
	deadline := time.Now().Add(st.wait)
	waiting := false
	for {
		var lease time.Time
		err := st.pool.QueryRow(ctx, sqlIdemClaim, k.keyHash, k.requestHash, st.lease.Microseconds()).Scan(&lease)
		switch {
		case err == nil:
			return st.run(c, next, k, lease, log)
		case !errors.Is(err, pgx.ErrNoRows):
			return unavailable("The idempotency store is unavailable; retry later.", fmt.Errorf("api: claim idempotency key: %w", err))
		}

		var row idemRow
		err = st.pool.QueryRow(ctx, sqlIdemLoad, k.keyHash).Scan(&row.requestHash, &row.state, &row.status, &row.sealed, &row.expired)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			continue
		case err != nil:
			return unavailable("The idempotency store is unavailable; retry later.", fmt.Errorf("api: load idempotency key: %w", err))
		}
		if !bytes.Equal(row.requestHash, k.requestHash) {
			return Problem(http.StatusUnprocessableEntity, codeIdempotencyKeyReused,
				"This Idempotency-Key was already used for a different request; use a new key for a new request.")
		}
		if row.state == "done" {
			return replay(c, k, row)
		}
		if row.expired {
			err := st.pool.QueryRow(ctx, sqlIdemTakeOver, k.keyHash, k.requestHash, st.lease.Microseconds()).Scan(&lease)
			switch {
			case err == nil:
				log.Warn("took over an abandoned idempotency key", slog.String("request_id", RequestID(c)))
				return st.run(c, next, k, lease, log)
			case !errors.Is(err, pgx.ErrNoRows):
				return unavailable("The idempotency store is unavailable; retry later.", fmt.Errorf("api: take over idempotency key: %w", err))
			}
			// Another retry took it over first: wait for that one.
		}

		if !waiting {
			waiting = true
			if st.onWait != nil {
				st.onWait()
			}
		}
		if !time.Now().Before(deadline) {
			return &problemError{
				status: http.StatusConflict,
				code:   codeIdempotencyKeyInProgress,
				detail: "A request with this Idempotency-Key is still running; retry later to get its answer.",
				header: http.Header{"Retry-After": {"1"}},
			}
		}
		timer := time.NewTimer(st.poll)
		select {
		case <-ctx.Done():
			timer.Stop()
			return unavailable("The request ended while waiting for the first request with this Idempotency-Key.", ctx.Err())
		case <-timer.C:
		}
	}
}

// run executes the handler as the owner of the key (lease is the fencing
// token) and records the answer. Errors are answered here through the error
// handler so that the problem body is what gets stored. Answers of 500 and
// above, a panic, or a failure to store release the key, so a retry runs the
// command again instead of waiting for a lease that nobody will finish.
func (st *idempotency) run(c echo.Context, next echo.HandlerFunc, k idemKeys, lease time.Time, log *slog.Logger) error {
	res := c.Response()
	capture := &captureWriter{ResponseWriter: res.Writer}
	res.Writer = capture
	recorded := false
	defer func() {
		res.Writer = capture.ResponseWriter
		if recorded {
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), idemWriteTimeout)
		defer cancel()
		if _, err := st.pool.Exec(ctx, sqlIdemRelease, k.keyHash, lease); err != nil {
			log.Error("could not release idempotency key; it frees itself when its lease ends",
				slog.String("request_id", RequestID(c)), slog.String("error", err.Error()))
		}
	}()

	if err := next(c); err != nil {
		c.Error(err)
	}
	status := capture.status
	if status == 0 {
		// Nothing was written: net/http will answer 200 with no body.
		status = http.StatusOK
	}
	if status >= 500 {
		return nil
	}

	sealed, err := sealAnswer(k, storedAnswer{Header: capture.header, Body: capture.body.Bytes()})
	if err != nil {
		log.Error("could not seal idempotent answer", slog.String("request_id", RequestID(c)), slog.String("error", err.Error()))
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), idemWriteTimeout)
	defer cancel()
	tag, err := st.pool.Exec(ctx, sqlIdemFinish, k.keyHash, lease, int32(status), sealed)
	if err != nil {
		log.Error("could not store idempotent answer; a retry will run the command again",
			slog.String("request_id", RequestID(c)), slog.String("error", err.Error()))
		return nil
	}
	recorded = true
	if tag.RowsAffected() == 0 {
		log.Warn("idempotency lease was taken over before the answer was stored",
			slog.String("request_id", RequestID(c)))
	}
	return nil
}

// storedAnswer is the plaintext of a sealed answer.
type storedAnswer struct {
	Header map[string]string `json:"header,omitempty"`
	Body   []byte            `json:"body"`
}

// sealAnswer encrypts an answer with AES-256-GCM under the request's sealing
// key, with a random nonce and the row key as additional data, so a sealed
// answer only opens in its own row.
func sealAnswer(k idemKeys, a storedAnswer) ([]byte, error) {
	plain, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("marshal answer: %w", err)
	}
	aead, err := newAEAD(k.sealKey)
	if err != nil {
		return nil, err
	}
	return aead.Seal(nil, nil, plain, k.keyHash), nil
}

func openAnswer(k idemKeys, sealed []byte) (storedAnswer, error) {
	aead, err := newAEAD(k.sealKey)
	if err != nil {
		return storedAnswer{}, err
	}
	plain, err := aead.Open(nil, nil, sealed, k.keyHash)
	if err != nil {
		return storedAnswer{}, fmt.Errorf("open answer: %w", err)
	}
	var a storedAnswer
	if err := json.Unmarshal(plain, &a); err != nil {
		return storedAnswer{}, fmt.Errorf("unmarshal answer: %w", err)
	}
	return a, nil
}

// newAEAD is AES-256-GCM that draws a random nonce per Seal and prefixes it
// to the ciphertext.
func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return aead, nil
}

// replay answers with a stored answer, byte for byte, plus
// Idempotent-Replayed: true.
func replay(c echo.Context, k idemKeys, row idemRow) error {
	if row.status == nil {
		return errors.New("api: idempotency row is done without a status")
	}
	a, err := openAnswer(k, row.sealed)
	if err != nil {
		return fmt.Errorf("api: replay idempotent answer: %w", err)
	}
	res := c.Response()
	for name, v := range a.Header {
		res.Header().Set(name, v)
	}
	res.Header().Set(HeaderIdempotentReplayed, "true")
	res.WriteHeader(int(*row.status))
	if _, err := res.Write(a.Body); err != nil {
		return fmt.Errorf("api: write replayed answer: %w", err)
	}
	return nil
}

// captureWriter passes an answer through to the client while keeping a copy
// of its status, the captured headers (as they stood when the status was
// written) and its body.
type captureWriter struct {
	http.ResponseWriter
	status int
	header map[string]string
	body   bytes.Buffer
}

func (w *captureWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		w.header = make(map[string]string, len(capturedHeaders))
		for _, name := range capturedHeaders {
			if v := w.ResponseWriter.Header().Get(name); v != "" {
				w.header[name] = v
			}
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *captureWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *captureWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// PurgeIdempotencyKeys deletes stored answers created more than olderThan
// ago and returns how many it deleted; cmd/ calls it periodically with 24 h.
// A key whose request still holds its lease is kept whatever its age, so a
// purge never lets a running command be started a second time. Without a
// database pool there is nothing to purge.
func (s *Server) PurgeIdempotencyKeys(ctx context.Context, olderThan time.Duration) (int64, error) {
	if olderThan <= 0 {
		return 0, fmt.Errorf("api: purge idempotency keys: olderThan must be positive, got %s", olderThan)
	}
	if s.idem == nil {
		return 0, nil
	}
	tag, err := s.idem.pool.Exec(ctx, sqlIdemPurge, olderThan.Microseconds())
	if err != nil {
		return 0, fmt.Errorf("api: purge idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}

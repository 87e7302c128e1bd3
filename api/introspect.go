package api

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/projections"
)

// Introspection from memory. Resource servers introspect on every call
// they serve, so POST /oauth2/introspect is the busiest route by far; the
// common request — HTTP Basic, a form with the token and at most a
// token_type_hint — is answered here from the token-validity model, with
// the answer fosite would give, byte for byte:
//
//   - the client authenticates as fosite checks it (sha256Hasher: the
//     SHA-256 of the secret compared in constant time with the stored one);
//   - the token is looked up by its signature, the part after the dot, as
//     the HMAC strategy keys it, must be an active access or refresh token
//     of a grant that stands, must not have expired, and its key part must
//     carry the server's HMAC-SHA512/256 signature (fosite checks the same
//     three things, in that order, and any failure is active:false);
//   - the answer has the members introspect writes, in encoding/json's
//     order (sorted keys) and escaping, and the same headers.
//
// Anything else goes to fosite, untouched: another authentication (a
// bearer token, client_id in the form), a wrong secret (fosite answers the
// 401 and the limits count it as they count every 401), a client or token
// the model does not hold or a model that is not current, a query string
// (?pretty), a body that is not a plain form of those two fields (scope,
// access_token, a repeated or escaped name, a semicolon, a long body), an
// unknown hint, an expiry that was not recorded. The body read here is
// handed back to fosite as it came.

// maxIntrospectBody is the longest body answered from memory: a token is
// 87 characters, its form about a hundred bytes.
const maxIntrospectBody = 1024

// introspectBuffers hold request bodies and answers.
var introspectBuffers = sync.Pool{New: func() any { b := make([]byte, 0, maxIntrospectBody); return &b }}

// Header values of every answer, shared: the server only reads them.
var (
	hdrNoStore = []string{"no-store"}
	hdrNoCache = []string{"no-cache"}
	hdrJSON    = []string{echo.MIMEApplicationJSON}
)

// tokenVerifier checks the HMAC-SHA512/256 signature of a token's key part
// as fosite's HMAC strategy does, with a pool of keyed hashes: keying one
// costs more than the signature.
type tokenVerifier struct {
	pool sync.Pool // of *keyedHash
}

// keyedHash is a keyed HMAC with room for its input and output, which
// would escape to the heap through the hash.Hash interface otherwise.
type keyedHash struct {
	h    hash.Hash
	key  [64]byte
	want [sha512.Size256]byte
}

func newTokenVerifier(secret []byte) *tokenVerifier {
	if len(secret) < 32 {
		return nil // fosite refuses such a key: every token goes to it
	}
	var key [32]byte
	copy(key[:], secret) // fosite keys with the first 32 bytes
	return &tokenVerifier{pool: sync.Pool{New: func() any { return &keyedHash{h: hmac.New(sha512.New512_256, key[:])} }}}
}

// valid reports whether a token's key part carries sig, both unpadded
// base64url. It allocates nothing.
func (v *tokenVerifier) valid(key, sig string) bool {
	var enc [96]byte // an encoded part; a token's are 43 characters
	var s [sha512.Size256]byte
	if len(key) > len(enc) || base64.RawURLEncoding.DecodedLen(len(sig)) != len(s) {
		return false
	}
	if m, err := base64.RawURLEncoding.Decode(s[:], enc[:copy(enc[:], sig)]); err != nil || m != len(s) {
		return false
	}
	kh := v.pool.Get().(*keyedHash)
	defer v.pool.Put(kh)
	n, err := base64.RawURLEncoding.Decode(kh.key[:], enc[:copy(enc[:], key)])
	if err != nil {
		return false
	}
	kh.h.Reset()
	kh.h.Write(kh.key[:n])
	return hmac.Equal(kh.h.Sum(kh.want[:0]), s[:])
}

// introspectForm is what the fast path accepts of the form.
type introspectForm struct {
	token, hint string
}

// parseIntrospectForm reads a form of token and token_type_hint as
// url.ParseQuery would, and refuses (ok false) what it might read
// otherwise or what fosite reads more of.
func parseIntrospectForm(body []byte) (f introspectForm, ok bool) {
	var seenToken, seenHint bool
	for len(body) > 0 {
		var pair []byte
		pair, body, _ = bytes.Cut(body, []byte("&"))
		if len(pair) == 0 {
			continue
		}
		name, value, _ := bytes.Cut(pair, []byte("="))
		if bytes.IndexByte(value, ';') >= 0 {
			return f, false
		}
		v, ok := unescaped(string(value))
		if !ok {
			return f, false
		}
		switch string(name) {
		case "token":
			if seenToken {
				return f, false
			}
			seenToken, f.token = true, v
		case "token_type_hint":
			if seenHint {
				return f, false
			}
			seenHint, f.hint = true, v
		default:
			return f, false
		}
	}
	return f, seenToken
}

// unescaped is url.QueryUnescape, which reads form values and, in fosite,
// HTTP Basic ids and secrets, without its copy when there is nothing to
// unescape; ok is false when it cannot.
func unescaped(s string) (string, bool) {
	if !strings.ContainsAny(s, "%+") {
		return s, true
	}
	s, err := url.QueryUnescape(s)
	return s, err == nil
}

// readIntrospectBody reads a body of at most maxIntrospectBody bytes into
// buf. When it cannot (longer, or a read error), it puts back in the
// request a body that yields what was read and then the rest, or the
// error, exactly as the original would have.
func readIntrospectBody(r *http.Request, buf []byte) ([]byte, bool) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength > maxIntrospectBody {
		return buf, false
	}
	orig := r.Body
	for {
		n, err := orig.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case errors.Is(err, io.EOF):
			return buf, true
		case err != nil:
			r.Body = readCloser{io.MultiReader(bytes.NewReader(bytes.Clone(buf)), errReader{err}), orig}
			return buf, false
		case len(buf) == cap(buf):
			// Longer than what is answered here, or at the limit: fosite
			// reads the rest.
			r.Body = readCloser{io.MultiReader(bytes.NewReader(bytes.Clone(buf)), orig), orig}
			return buf, false
		}
	}
}

// unread puts body back in front of what is left of the request's.
func unread(r *http.Request, body []byte) {
	r.Body = readCloser{io.MultiReader(bytes.NewReader(bytes.Clone(body)), r.Body), r.Body}
}

type readCloser struct {
	io.Reader
	io.Closer
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// introspectFromMemory answers the request when it can (see above) and
// reports whether it did; when it did not, the request is as it came.
func (o *oauthProvider) introspectFromMemory(c echo.Context) bool {
	m, v := o.store.tokens, o.verifier
	req := c.Request()
	if m == nil || v == nil || o.config.DisableRefreshTokenValidation || len(o.config.RotatedGlobalSecrets) > 0 ||
		req.URL.RawQuery != "" || req.Header.Get(echo.HeaderContentType) != echo.MIMEApplicationForm || req.PostForm != nil {
		return false
	}
	id, secret, ok := req.BasicAuth()
	if !ok {
		return false
	}
	if id, ok = unescaped(id); !ok {
		return false
	}
	if secret, ok = unescaped(secret); !ok {
		return false
	}
	cid, err := uuid.Parse(id)
	if err != nil {
		return false
	}
	client, served := m.Client(cid)
	if !served || !secretMatches(client.SecretHash, secret) {
		return false
	}

	buf := introspectBuffers.Get().(*[]byte)
	defer introspectBuffers.Put(buf)
	body, ok := readIntrospectBody(req, (*buf)[:0])
	if !ok {
		return false
	}
	form, ok := parseIntrospectForm(body)
	if !ok || !slices.Contains([]string{"", consent.KindAccessToken, consent.KindRefreshToken}, form.hint) {
		unread(req, body)
		return false
	}
	// The answer goes after the body in the buffer: the body is handed
	// back to fosite if the model cannot answer.
	answer, ok := o.introspection(c, m, v, form.token, body[len(body):])
	if !ok {
		unread(req, body)
		return false
	}
	h := c.Response().Header()
	h[echo.HeaderCacheControl] = hdrNoStore
	h["Pragma"] = hdrNoCache
	if h.Get(echo.HeaderContentType) == "" {
		h[echo.HeaderContentType] = hdrJSON
	}
	c.Response().WriteHeader(http.StatusOK)
	_, _ = c.Response().Write(answer)
	return true
}

// introspection is the answer for token, appended to out; ok is false when
// the model cannot give fosite's.
func (o *oauthProvider) introspection(c echo.Context, m *projections.TokenValidity, v *tokenVerifier, token string, out []byte) ([]byte, bool) {
	key, sig, ok := strings.Cut(token, ".")
	if !ok || key == "" || sig == "" || strings.Contains(sig, ".") {
		return out, false
	}
	t, found, served := m.Token(sig)
	if !served {
		return out, false
	}
	inactive := append(out, `{"active":false}`+"\n"...)
	if !found {
		return inactive, true // its grant ended, or its account is blocked
	}
	// fosite's storage reads a token whose client the model does not hold
	// from the database.
	client, served := m.Client(t.ClientID)
	if !served || t.ExpiresAt.IsZero() {
		return out, false
	}
	if t.Status != "active" || (t.Kind != consent.KindAccessToken && t.Kind != consent.KindRefreshToken) ||
		t.ExpiresAt.Before(time.Now().UTC()) || !v.valid(key, sig) {
		return inactive, true
	}

	out = append(out, `{"active":true`...)
	if aud := distinct(t.GrantedAudience); len(aud) > 0 {
		out = append(out, `,"aud":[`...)
		for i, a := range aud {
			if i > 0 {
				out = append(out, ',')
			}
			out = appendJSONString(out, a)
		}
		out = append(out, ']')
	}
	out = append(out, `,"client_id":`...)
	out = appendUUID(out, client.ID)
	out = append(out, `,"exp":`...)
	out = strconv.AppendInt(out, t.ExpiresAt.Unix(), 10)
	out = append(out, `,"iat":`...)
	out = strconv.AppendInt(out, t.RequestedAt.Unix(), 10)
	out = append(out, `,"iss":"`...)
	if o.publicURL != "" {
		out = appendJSONChars(out, o.publicURL)
	} else { // o.issuer, without building the string
		out = appendJSONChars(appendJSONChars(out, c.Scheme()), "://")
		out = appendJSONChars(out, c.Request().Host)
	}
	out = append(out, '"')
	if scopes := distinct(t.GrantedScopes); len(scopes) > 0 {
		out = append(out, `,"scope":`...)
		out = appendJSONString(out, strings.Join(scopes, " "))
	}
	if t.AccountID != nil {
		out = append(out, `,"sub":`...)
		out = appendUUID(out, *t.AccountID)
	}
	if t.Kind == consent.KindAccessToken {
		out = append(out, `,"token_type":"Bearer"`...)
	}
	out = append(out, `,"token_use":`...)
	out = appendJSONString(out, t.Kind)
	return append(out, "}\n"...), true
}

// distinct drops repeated values, keeping the first of each, as fosite's
// GrantScope and GrantAudience do; it copies only when there is one.
func distinct(list []string) []string {
	for i := 1; i < len(list); i++ {
		for j := range i {
			if list[i] == list[j] {
				var out []string
				for _, s := range list {
					if !slices.Contains(out, s) {
						out = append(out, s)
					}
				}
				return out
			}
		}
	}
	return list
}

// appendJSONString appends s as encoding/json writes it (with HTML
// escaping).
func appendJSONString(out []byte, s string) []byte {
	out = append(out, '"')
	return append(appendJSONChars(out, s), '"')
}

// appendJSONChars appends s as encoding/json writes it between the
// quotes; what needs escaping is left to encoding/json itself.
func appendJSONChars(out []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 || b >= 0x7f || b == '"' || b == '\\' || b == '<' || b == '>' || b == '&' {
			quoted, _ := json.Marshal(s)
			return append(out, quoted[1:len(quoted)-1]...)
		}
	}
	return append(out, s...)
}

// appendUUID appends id as a JSON string, as id.String() spells it.
func appendUUID(out []byte, id uuid.UUID) []byte {
	out = append(out, '"')
	for i, b := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hexDigits[b>>4], hexDigits[b&0x0f])
	}
	return append(out, '"')
}

const hexDigits = "0123456789abcdef"

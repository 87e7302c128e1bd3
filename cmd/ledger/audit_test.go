package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/domain/audit"
	"github.com/consentledger/ledger/migrations/dbtest"
)

// TestAuditExportVerifiesOfflineAndAnyFlippedByteIsRejected exports an
// account's bundle, checks it with no database, then flips bytes all over
// the file: every change must be refused with exit code 1.
func TestAuditExportVerifiesOfflineAndAnyFlippedByteIsRejected(t *testing.T) {
	dbURL := dbtest.URL(t)
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = 7
	key := ed25519.NewKeyFromSeed(seed)
	pub := base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
	t.Setenv("LEDGER_DATABASE_URL", dbURL)
	t.Setenv("LEDGER_EVENTSTORE_URL", "")
	t.Setenv("LEDGER_DEV", "true")
	t.Setenv("LEDGER_LOG_LEVEL", "warn")
	t.Setenv("LEDGER_AUDIT_CHECKPOINT_EVERY", "7")
	t.Setenv("LEDGER_AUDIT_SIGNING_KEY", base64.StdEncoding.EncodeToString(seed))
	fillLog(t, dbURL, 6)
	if _, stderr, err := cli(t, "projections", "rebuild", "--all"); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, stderr)
	}
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var account string
	if err := pool.QueryRow(context.Background(), `SELECT account_id::text FROM accounts ORDER BY created_at LIMIT 1`).Scan(&account); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "bundle.ndjson")
	if _, _, err := cli(t, "audit", "export", "--account", "not-an-id"); err == nil {
		t.Fatal("export of a malformed account id")
	}
	if _, _, err := cli(t, "audit", "export", "--account", "00000000-0000-0000-0000-000000000001"); err == nil {
		t.Fatal("export of an unknown account")
	}
	_, stderr, err := cli(t, "audit", "export", "--account", account, "--out", file)
	if err != nil || !strings.Contains(stderr, "exported") {
		t.Fatalf("export: %v\n%s", err, stderr)
	}
	original, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b, err := audit.ReadBundle(strings.NewReader(string(original)))
	if err != nil || len(b.Events) == 0 || b.Header.AccountID.String() != account {
		t.Fatalf("bundle: %v (%d events)", err, len(b.Events))
	}

	// Offline: no database, no configuration at all.
	t.Setenv("LEDGER_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
	t.Setenv("LEDGER_AUDIT_CHECKPOINT_EVERY", "not a number")
	if out, _, err := cli(t, "audit", "verify", file); err != nil || !strings.HasPrefix(out, "VALID") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	if _, _, err := cli(t, "audit", "verify", "--public-key", pub, file); err != nil {
		t.Fatalf("verify with the trusted key: %v", err)
	}
	other := base64.StdEncoding.EncodeToString(make([]byte, ed25519.PublicKeySize))
	if _, _, err := cli(t, "audit", "verify", "--public-key", other, file); exitCode(err) != 1 {
		t.Fatalf("verify against another key: %v", err)
	}
	if _, _, err := cli(t, "audit", "verify", filepath.Join(dir, "missing")); exitCode(err) != 2 {
		t.Fatalf("verify of a missing file: %v", err)
	}

	rejected := func(what string, content []byte) {
		t.Helper()
		changed := filepath.Join(dir, "changed.ndjson")
		if err := os.WriteFile(changed, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, _, err := cli(t, "audit", "verify", changed); exitCode(err) != 1 || !strings.HasPrefix(out, "INVALID") {
			t.Fatalf("%s: accepted (%v)\n%s", what, err, out)
		}
	}
	// Every byte of the first event's line, and bytes spread over the rest.
	first := strings.Index(string(original), `{"kind":"event"`)
	end := first + strings.IndexByte(string(original[first:]), '\n')
	positions := []int{}
	for i := first; i <= end; i++ {
		positions = append(positions, i)
	}
	for i := 0; i < len(original); i += 1 + len(original)/400 {
		positions = append(positions, i)
	}
	positions = append(positions, len(original)-1, len(original)-2, len(original)-10)
	for _, i := range positions {
		for _, bit := range []byte{0x01, 0x20} {
			c := append([]byte(nil), original...)
			c[i] ^= bit
			rejected("byte "+string(rune('0'+i%10))+" flipped", c)
		}
	}
	rejected("truncated", original[:len(original)-1])
	rejected("a line dropped", []byte(strings.Replace(string(original), string(original[first:end+1]), "", 1)))
	rejected("a line added", append(append([]byte(nil), original...), original[first:end+1]...))
}

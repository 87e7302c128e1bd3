package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain/audit"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

// exitError ends the process with its own code: `ledger audit verify`
// exits 1 for a bundle that does not verify, 2 for a usage error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode is the process's exit code for err.
func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return 2
}

// auditExport writes the offline bundle of one account (see
// audit.BundleFormat): its streams' events as stored (personal data stays
// sealed), the chain hashes of the whole log up to the newest checkpoint,
// that checkpoint, and a seal signed with LEDGER_AUDIT_SIGNING_KEY, the key
// serve signs checkpoints with.
func auditExport(ctx context.Context, cfg config, logger *slog.Logger, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("ledger audit export", flag.ContinueOnError)
	fs.SetOutput(errOut)
	account := fs.String("account", "", "the account whose history to export (its id)")
	file := fs.String("out", "", "write the bundle to this file instead of standard output")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	id, err := uuid.Parse(*account)
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("audit export: unexpected arguments %q", fs.Args())
	case err != nil:
		return errors.New("audit export: --account must be an account id (a UUID)")
	}
	if err := cfg.auditSigningKey(); err != nil {
		return err
	}
	if cfg.AuditKeyRandom {
		return errors.New("audit export: set LEDGER_AUDIT_SIGNING_KEY to the key serve signs checkpoints with")
	}
	pool, store, err := open(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer store.Close()
	raw := eventstore.Raw(store) // the chain covers what is stored: personal data stays sealed

	if _, err := projections.SignCheckpoints(ctx, pool, cfg.AuditKey); err != nil {
		return err
	}
	cps, err := projections.Checkpoints(ctx, pool, 0, 1)
	if err != nil {
		return err
	}
	if len(cps) == 0 {
		return errors.New("audit export: no checkpoint yet (the audit_checkpoints projection records them as the log grows)")
	}
	cp := cps[0]
	if !bytes.Equal(cp.PublicKey, cfg.AuditKey.Public().(ed25519.PublicKey)) {
		return errors.New("audit export: the newest checkpoint was signed with another key than LEDGER_AUDIT_SIGNING_KEY")
	}
	streams, err := projections.SubjectStreams(ctx, pool, id)
	if err != nil {
		return err
	}
	if len(streams) == 0 {
		return fmt.Errorf("audit export: no stream concerns account %s", id)
	}
	subject := map[uuid.UUID]eventstore.RecordedEvent{}
	for _, s := range streams {
		evs, err := eventstore.ReadWholeStream(ctx, raw, s)
		if err != nil {
			return err
		}
		for _, e := range evs {
			subject[e.ID] = e
		}
	}

	var w io.Writer = out
	if *file != "" {
		f, err := os.Create(*file)
		if err != nil {
			return fmt.Errorf("audit export: %w", err)
		}
		defer f.Close()
		w = f
	}
	bw := audit.NewBundleWriter(w)
	bw.Header(audit.BundleHeader{AccountID: id, Streams: streams, ExportedAt: time.Now().UTC().Truncate(time.Second)})
	v := eventstore.NewChainVerifier()
	var included []audit.BundleEvent
	after := eventstore.Start
	for v.Count() < cp.Count {
		page, err := raw.ReadAll(ctx, after, min(1000, int(cp.Count-v.Count())))
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			v.Add(e)
			bw.Log(e.Hash)
			if s, ok := subject[e.ID]; ok && s.StreamID == e.StreamID && s.Revision == e.Revision {
				included = append(included, audit.BundleEvent{LogIndex: v.Count(), Position: e.Position, Stream: e.StreamID, Revision: e.Revision,
					ID: e.ID, Type: e.Type, Data: string(e.Data), Metadata: e.Metadata, PrevHash: e.PrevHash, Hash: e.Hash})
			}
		}
		after = page[len(page)-1].Position
	}
	if !v.Checkpoint(cp.Count, cp.Position, cp.RollingHash) {
		return fmt.Errorf("audit export: the log does not match its checkpoint at %s (see GET /v1/audit/verify)", cp.Position)
	}
	sort.Slice(included, func(i, j int) bool { return included[i].LogIndex < included[j].LogIndex })
	for _, e := range included {
		bw.Event(e)
	}
	bw.Checkpoint(audit.BundleCheckpoint{Position: cp.Position, Count: cp.Count, RollingHash: cp.RollingHash, LastEventAt: cp.LastEventAt,
		PublicKey: cp.PublicKey, Signature: cp.Signature})
	if err := bw.Seal(cfg.AuditKey); err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	if newer := len(subject) - len(included); newer > 0 {
		fmt.Fprintf(errOut, "%d newer events of this account are not covered by a checkpoint yet and were left out\n", newer)
	}
	fmt.Fprintf(errOut, "exported %d events of %d streams, checkpoint at event %d, public key %s\n",
		len(included), len(streams), cp.Count, cfg.auditPublicKey())
	return nil
}

// auditVerify checks a bundle offline: no database, no configuration.
// It exits 0 only when the bundle verifies; --public-key pins the key the
// auditor trusts (else the bundle's own key is reported, to compare with
// GET /v1/audit/public-key).
func auditVerify(args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("ledger audit verify", flag.ContinueOnError)
	fs.SetOutput(errOut)
	pin := fs.String("public-key", "", "the ledger's Ed25519 public key (base64) the bundle must be signed with")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() != 1 {
		return &exitError{code: 2, err: errors.New("audit verify: want one bundle file")}
	}
	var trusted ed25519.PublicKey
	if *pin != "" {
		k, err := decodeBase64(*pin)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return &exitError{code: 2, err: errors.New("audit verify: --public-key must be a 32-byte Ed25519 public key in base64")}
		}
		trusted = k
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("audit verify: %w", err)}
	}
	defer f.Close()
	b, err := audit.ReadBundle(f)
	if err == nil {
		err = b.Verify(trusted)
	}
	if err != nil {
		fmt.Fprintf(out, "INVALID: %v\n", err)
		return &exitError{code: 1, err: err}
	}
	fmt.Fprintf(out, "VALID: account %s, %d events of %d streams, checkpoint at event %d (%s), public key %s\n",
		b.Header.AccountID, len(b.Events), len(b.Header.Streams), b.Checkpoint.Count,
		b.Checkpoint.LastEventAt.Format(time.RFC3339), encodeBase64(b.Checkpoint.PublicKey))
	return nil
}

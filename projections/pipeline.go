package projections

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// errPipelineDiverged says a pipelined batch did not go as assumed: a
// statement failed or touched another number of rows than one. The batch is
// rolled back and applied again statement by statement.
var errPipelineDiverged = errors.New("pipelined statements diverged from the assumption")

// pipeTx lets a rebuild send a whole batch's statements in one round trip
// instead of one per statement, without changing Apply.
//
// Exec queues the statement and answers at once as if it succeeded and
// touched exactly one row (what an INSERT or an UPDATE by key does on a
// consistent read model). flush sends the queue and checks every answer
// against that assumption; anything else (an error, zero or several rows)
// is errPipelineDiverged, and the caller rolls the transaction back and
// replays the batch with the real transaction, so Apply's decisions are
// always the ones it makes on real answers. Reads (Query, QueryRow) and
// everything else flush first, so they see every earlier write.
type pipeTx struct {
	pgx.Tx
	batch *pgx.Batch
	err   error
}

func newPipeTx(tx pgx.Tx) *pipeTx { return &pipeTx{Tx: tx, batch: &pgx.Batch{}} }

func (p *pipeTx) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	p.batch.Queue(sql, args...)
	return assumedTag(sql), nil
}

// assumedTag is the answer of a statement that touched one row.
func assumedTag(sql string) pgconn.CommandTag {
	verb := strings.TrimLeft(sql, " \t\r\n")
	verb = verb[:min(len(verb), 6)]
	switch {
	case strings.EqualFold(verb, "INSERT"):
		return pgconn.NewCommandTag("INSERT 0 1")
	case strings.EqualFold(verb, "DELETE"):
		return pgconn.NewCommandTag("DELETE 1")
	default:
		return pgconn.NewCommandTag("UPDATE 1")
	}
}

// flush sends the queued statements and checks their answers.
func (p *pipeTx) flush(ctx context.Context) error {
	if p.err != nil {
		return p.err
	}
	n := p.batch.Len()
	if n == 0 {
		return nil
	}
	br := p.Tx.SendBatch(ctx, p.batch)
	p.batch = &pgx.Batch{}
	for i := range n {
		tag, err := br.Exec()
		if err != nil {
			_ = br.Close()
			p.err = fmt.Errorf("%w: statement %d: %w", errPipelineDiverged, i, err)
			return p.err
		}
		if tag.RowsAffected() != 1 {
			_ = br.Close()
			p.err = fmt.Errorf("%w: statement %d touched %d rows", errPipelineDiverged, i, tag.RowsAffected())
			return p.err
		}
	}
	if err := br.Close(); err != nil {
		p.err = fmt.Errorf("%w: %w", errPipelineDiverged, err)
	}
	return p.err
}

func (p *pipeTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := p.flush(ctx); err != nil {
		return nil, err
	}
	return p.Tx.Query(ctx, sql, args...)
}

func (p *pipeTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := p.flush(ctx); err != nil {
		return errRow{err}
	}
	return p.Tx.QueryRow(ctx, sql, args...)
}

func (p *pipeTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	// After a failed flush the transaction is aborted: the batch fails too,
	// and the caller replays with the real transaction.
	_ = p.flush(ctx)
	return p.Tx.SendBatch(ctx, b)
}

func (p *pipeTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if err := p.flush(ctx); err != nil {
		return 0, err
	}
	return p.Tx.CopyFrom(ctx, table, columns, src)
}

func (p *pipeTx) Begin(ctx context.Context) (pgx.Tx, error) {
	if err := p.flush(ctx); err != nil {
		return nil, err
	}
	return p.Tx.Begin(ctx)
}

func (p *pipeTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if err := p.flush(ctx); err != nil {
		return nil, err
	}
	return p.Tx.Prepare(ctx, name, sql)
}

func (p *pipeTx) Conn() *pgx.Conn {
	// Whatever runs on the connection directly must see the queued writes.
	_ = p.flush(context.Background())
	return p.Tx.Conn()
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

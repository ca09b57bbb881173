package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// How many rows go in one statement. On PostgreSQL and CockroachDB
// (arrays) a table's rows go in one statement whose parameters are
// arrays, one per column, expanded by unnest: its text is the same
// whatever the number of rows, so pgx prepares it once per connection, the
// server parses and plans it once, and the values travel in binary. The
// multi-row VALUES statements this replaced had a text for every number of
// rows, each prepared anew, and a parameter for every value, which pgx
// encoded as text: the largest allocator in the control plane over a
// fleet benchmark. SQLite has no arrays and runs in process; it is fastest
// with short multi-row statements, since as it parses it looks each $n up
// among the placeholders before it: a group of 200 agents' statuses, 15
// columns, took 4.6–4.9 ms in statements of 10 rows, 5.3 ms in 5, 5.8–7.8
// ms in 20, 9.3 ms in 50 and 32 ms in 200; their metric points, 8 columns,
// 380–390 ms in statements of 500 rows (BenchmarkIngestReportsMany); 1,000
// agents' positions, 6 columns then, 10 ms in statements of 10 rows, 12
// ms in 50 and 64 ms in 500 (BenchmarkPutAgentSyncs).
const (
	// sqliteParamsPerStatement bounds a statement's placeholders on
	// SQLite: 10 rows of a status's 15 columns.
	sqliteParamsPerStatement = 150
	// arrayRowsPerStatement bounds one array statement: a group of report
	// batches holds at most 200 agents, but up to 5,000 metric points per
	// batch.
	arrayRowsPerStatement = 10_000
)

// rowColumn is one column of the rows insertRows writes.
type rowColumn interface {
	// len is the number of rows.
	len() int
	// sqlType is the column's type as an array's element type in a cast.
	sqlType() string
	// slice returns rows [lo, hi) as one array parameter.
	slice(lo, hi int) any
	// value returns row i's value as a parameter of its own.
	value(i int) any
}

// uuidColumn is a UUID rowColumn: binary UUIDs in arrays, strings to
// SQLite, which stores UUIDs as text. The arrays' elements are [16]byte,
// which pgx encodes in binary; it encodes strings, and uuid.UUID (a
// driver.Valuer that returns a string), as text.
type uuidColumn [][16]byte

// uuids parses the ids of a column named name for a uuidColumn. Only the
// canonical form is taken (isValidID): the ids are keys, compared as text
// on SQLite and within a statement, so two spellings of one UUID must not
// both get in.
func uuids(name string, ids []string) (uuidColumn, error) {
	out := make(uuidColumn, len(ids))
	for i, id := range ids {
		u, err := uuid.Parse(id)
		if err != nil || u.String() != id {
			return nil, fmt.Errorf("%s %q is not a UUID in canonical form", name, id)
		}
		out[i] = u
	}
	return out, nil
}

func (c uuidColumn) len() int             { return len(c) }
func (c uuidColumn) sqlType() string      { return "UUID" }
func (c uuidColumn) slice(lo, hi int) any { return [][16]byte(c[lo:hi]) }
func (c uuidColumn) value(i int) any      { return uuid.UUID(c[i]).String() }

// column is a rowColumn of values of Go type T.
type column[T any] struct {
	typ  string
	vals []T
}

func (c column[T]) len() int             { return len(c.vals) }
func (c column[T]) sqlType() string      { return c.typ }
func (c column[T]) slice(lo, hi int) any { return c.vals[lo:hi] }
func (c column[T]) value(i int) any      { return c.vals[i] }

// insertRows writes the rows whose values are in cols, one value per row
// in each, with the INSERT head ("INSERT INTO t (a, b)") and tail (an ON
// CONFLICT clause, or empty): with arrays, as `head SELECT * FROM
// unnest($1::A[], $2::B[]) tail`, one statement for up to
// arrayRowsPerStatement rows; otherwise as multi-row VALUES statements of
// at most sqliteParamsPerStatement placeholders (see those constants).
func insertRows(ctx context.Context, q querier, arrays bool, head, tail string, cols ...rowColumn) error {
	n := cols[0].len()
	for i, c := range cols {
		if c.len() != n {
			return fmt.Errorf("insert rows: column %d has %d values; column 0 has %d", i, c.len(), n)
		}
	}
	per := arrayRowsPerStatement
	if !arrays {
		per = max(sqliteParamsPerStatement/len(cols), 1)
	}
	for lo := 0; lo < n; lo += per {
		hi := min(lo+per, n)
		var a where
		var body string
		if arrays {
			casts := make([]string, len(cols))
			for i, c := range cols {
				casts[i] = a.arg(c.slice(lo, hi)) + "::" + c.sqlType() + "[]"
			}
			body = " SELECT * FROM unnest(" + strings.Join(casts, ", ") + ") "
		} else {
			rows := make([]string, hi-lo)
			vals := make([]any, len(cols))
			for r := lo; r < hi; r++ {
				for i, c := range cols {
					vals[i] = c.value(r)
				}
				rows[r-lo] = a.row(vals...)
			}
			body = " VALUES " + strings.Join(rows, ", ") + " "
		}
		if _, err := q.exec(ctx, head+body+tail, a.args...); err != nil {
			return err
		}
	}
	return nil
}

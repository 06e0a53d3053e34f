package projection

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
)

// maxSamples bounds the differing rows Verify reports per projection.
const maxSamples = 10

// VerifyResult compares one projection's live view with a fresh
// derivation from the log.
type VerifyResult struct {
	Name  string
	Equal bool
	// Missing counts rows a fresh derivation has and the live view lacks;
	// Extra counts rows the live view has and a fresh derivation lacks. A
	// changed row counts once in each. Both are 0 when the projection only
	// implements Checksummer.
	Missing, Extra int64
	// Samples shows up to 10 differing rows.
	Samples []Sample
	// LiveChecksum and FreshChecksum are set for projections implementing
	// Checksummer.
	LiveChecksum, FreshChecksum string
	// Events is the number of events the fresh derivation replayed.
	Events int64
}

// Sample is one row that differs between the live view and a fresh
// derivation.
type Sample struct {
	// Table is the projection table the row belongs to.
	Table string
	// Side is "missing" (a fresh derivation has the row, the live view
	// lacks it) or "extra" (the live view has it, a fresh derivation
	// lacks it).
	Side string
	// Columns are the table's column names, in table order.
	Columns []string
	// Values are the row's values as the database renders them as text,
	// one per column; nil for NULL.
	Values []*string
}

// String renders the sample as "missing <table>: (col=value, …)".
func (s Sample) String() string {
	parts := make([]string, len(s.Columns))
	for i, c := range s.Columns {
		v := "NULL"
		if s.Values[i] != nil {
			v = fmt.Sprintf("%q", *s.Values[i])
		}
		parts[i] = c + "=" + v
	}
	return fmt.Sprintf("%s %s: (%s)", s.Side, s.Table, strings.Join(parts, ", "))
}

// VerifyResults are Verify's results, in name order.
type VerifyResults []VerifyResult

// Get returns the result of the projection named name.
func (rs VerifyResults) Get(name string) (VerifyResult, bool) {
	for _, r := range rs {
		if r.Name == name {
			return r, true
		}
	}
	return VerifyResult{}, false
}

// Err returns a *DifferenceError naming every projection whose live view
// differs from a fresh derivation, or nil when all are equal: a caller
// that only checks Verify's error would otherwise miss a difference.
//
//	res, err := projection.Verify(ctx, log, reg, nil)
//	if err == nil {
//		err = res.Err()
//	}
func (rs VerifyResults) Err() error {
	var diff []VerifyResult
	for _, r := range rs {
		if !r.Equal {
			diff = append(diff, r)
		}
	}
	if len(diff) == 0 {
		return nil
	}
	return &DifferenceError{Results: diff}
}

// Verify derives each named projection (all registered ones when names is
// empty) afresh and compares it with the live view, without changing
// anything. The comparison uses the projection's Checksummer and, when it implements
// Tabler, a row-by-row comparison of its tables that counts and samples the
// differences.
//
// A projection that lists its tables (Tabler), unqualified, is verified
// without blocking anyone: the live view is read from one snapshot of the
// database, and the fresh derivation replays the log from that snapshot
// into temporary tables of the same names, in short transactions (on
// SQLite, transactions that write only those tables and take no lock on
// the database). Appends never wait for it, and followers are not held
// back. A projection verified by checksum alone, or a pool limited to one
// connection, takes the blocking way: appends that apply to the
// projection wait while it is verified, as during a rebuild.
//
// A difference is not an error: check each result's Equal, or call the
// results' Err method.
func Verify(ctx context.Context, log *eventlog.Log, reg *Registry, names []string) (VerifyResults, error) {
	entries, err := reg.selectEntries(names)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		_, isTabler := e.p.(Tabler)
		_, isSummer := e.p.(Checksummer)
		if !isTabler && !isSummer {
			return nil, fmt.Errorf("projection %s: %w: implement Tables() or Checksum()", e.name, ErrNotVerifiable)
		}
	}
	d, err := eventlog.BackendOf(log.DB())
	if err != nil {
		return nil, err
	}
	tel, err := newOpTelemetry(log)
	if err != nil {
		return nil, fmt.Errorf("projection: verify: telemetry: %w", err)
	}
	out := make(VerifyResults, 0, len(entries))
	for _, e := range entries {
		var res VerifyResult
		ectx, end := tel.verifying(ctx, e.name)
		// The snapshot and the derivation need a connection each: a pool
		// of one would wait for itself.
		if e.async {
			res, err = verifyOne(ectx, log, d, e)
		} else if tables, ok := onlineTables(e); ok && log.DB().Stats().MaxOpenConnections != 1 {
			res, err = verifyOnline(ectx, log, d, e, tables)
		} else {
			res, err = verifyOne(ectx, log, d, e)
		}
		end(res, err)
		if err != nil {
			return out, fmt.Errorf("projection: verify %s: %w", e.name, err)
		}
		out = append(out, res)
	}
	return out, nil
}

func verifyOne(ctx context.Context, log *eventlog.Log, d eventlog.Backend, e *registered) (VerifyResult, error) {
	res := VerifyResult{Name: e.name}
	tx, err := log.DB().BeginTxx(ctx, nil)
	if err != nil {
		return res, err
	}
	defer func() { _ = tx.Rollback() }() // always: verify changes nothing

	if err := lockExclusive(ctx, tx, d, e.name); err != nil {
		return res, err
	}
	summer, _ := e.p.(Checksummer)
	if summer != nil {
		if res.LiveChecksum, err = summer.Checksum(ctx, tx); err != nil {
			return res, fmt.Errorf("live checksum: %w", err)
		}
	}
	var tables []string
	if t, ok := e.p.(Tabler); ok {
		tables = t.Tables()
	}
	// Keep a copy of the live rows: Reset is about to delete them.
	copies := make([]string, len(tables))
	for i, t := range tables {
		copies[i] = fmt.Sprintf("canonlog_verify_live_%d", i)
		if _, err := tx.ExecContext(ctx, `CREATE TEMP TABLE `+copies[i]+` AS SELECT * FROM `+quoteIdent(t)); err != nil {
			return res, fmt.Errorf("copy live %s: %w", t, err)
		}
	}
	if err := e.p.Reset(ctx, tx); err != nil {
		return res, fmt.Errorf("reset: %w", err)
	}
	// An asynchronous projection is compared at its consumer's position:
	// the fresh derivation replays the events it has handled.
	var keep func(int64) bool
	if e.async {
		if keep, err = handledByConsumer(ctx, log, tx, e); err != nil {
			return res, err
		}
	}
	if res.Events, _, err = replayOnly(ctx, log, tx, e, 0, 0, nil, keep); err != nil {
		return res, err
	}
	res.Equal = true
	if summer != nil {
		if res.FreshChecksum, err = summer.Checksum(ctx, tx); err != nil {
			return res, fmt.Errorf("fresh checksum: %w", err)
		}
		res.Equal = res.LiveChecksum == res.FreshChecksum
	}
	for i, t := range tables {
		missing, extra, samples, err := diffTable(ctx, tx, copies[i], t, maxSamples-len(res.Samples))
		if err != nil {
			return res, fmt.Errorf("compare %s: %w", t, err)
		}
		res.addDiff(missing, extra, samples)
	}
	return res, nil
}

// addDiff adds one table's differences to r.
func (r *VerifyResult) addDiff(missing, extra int64, samples []Sample) {
	r.Missing += missing
	r.Extra += extra
	r.Samples = append(r.Samples, samples...)
	if missing > 0 || extra > 0 {
		r.Equal = false
	}
}

// diffTable compares the multiset of rows of live and fresh (same columns),
// comparing every column as text so that any column type works.
func diffTable(ctx context.Context, tx *sqlx.Tx, live, fresh string, sampleLimit int) (missing, extra int64, samples []Sample, err error) {
	cols, err := columnsOf(ctx, tx, fresh)
	if err != nil {
		return 0, 0, nil, err
	}
	if len(cols) == 0 {
		return 0, 0, nil, errors.New("table has no columns")
	}
	casts := make([]string, len(cols))
	quoted := make([]string, len(cols))
	for i, c := range cols {
		quoted[i] = quoteIdent(c)
		casts[i] = "CAST(" + quoted[i] + " AS TEXT) AS " + quoted[i]
	}
	sel := strings.Join(casts, ", ")
	list := strings.Join(quoted, ", ")
	// side: +1 for a live row, -1 for a fresh one; a group whose sides do
	// not cancel is a difference (positive: extra in live).
	grouped := `SELECT ` + list + `, SUM(side) AS delta FROM (
	SELECT ` + sel + `, 1 AS side FROM ` + live + `
	UNION ALL
	SELECT ` + sel + `, -1 AS side FROM ` + quoteIdent(fresh) + `
) AS u GROUP BY ` + list + ` HAVING SUM(side) <> 0`
	if err := tx.QueryRowxContext(ctx, `SELECT
	COALESCE(SUM(CASE WHEN delta < 0 THEN -delta ELSE 0 END), 0),
	COALESCE(SUM(CASE WHEN delta > 0 THEN delta ELSE 0 END), 0)
FROM (`+grouped+`) AS d`).Scan(&missing, &extra); err != nil {
		return 0, 0, nil, err
	}
	if missing+extra == 0 || sampleLimit <= 0 {
		return missing, extra, nil, nil
	}
	rows, err := tx.QueryxContext(ctx, grouped+` ORDER BY `+list+` LIMIT `+fmt.Sprint(sampleLimit))
	if err != nil {
		return 0, 0, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		vals := make([]any, len(cols)+1)
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return 0, 0, nil, err
		}
		smp := Sample{Table: fresh, Side: "missing", Columns: cols, Values: make([]*string, len(cols))}
		for i := range cols {
			smp.Values[i] = textValue(vals[i])
		}
		if toInt(vals[len(cols)]) > 0 {
			smp.Side = "extra"
		}
		samples = append(samples, smp)
	}
	return missing, extra, samples, rows.Err()
}

func columnsOf(ctx context.Context, tx *sqlx.Tx, table string) ([]string, error) {
	rows, err := tx.QueryxContext(ctx, `SELECT * FROM `+quoteIdent(table)+` WHERE 1 = 0`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return rows.Columns()
}

// textValue returns the text of a value selected CAST AS TEXT; nil for
// NULL.
func textValue(v any) *string {
	var s string
	switch x := v.(type) {
	case nil:
		return nil
	case []byte:
		s = string(x)
	case string:
		s = x
	default:
		s = fmt.Sprint(x)
	}
	return &s
}

func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case float64:
		return int64(x)
	case []byte:
		var n int64
		_, _ = fmt.Sscan(string(x), &n)
		return n
	}
	return 0
}

// quoteIdent quotes a possibly schema-qualified identifier for both
// dialects.
func quoteIdent(name string) string {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = `"` + strings.ReplaceAll(p, `"`, `""`) + `"`
	}
	return strings.Join(parts, ".")
}

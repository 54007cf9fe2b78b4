package pgstore

import "github.com/jackc/pgx/v5/pgxpool"

// ConfigurePool sets the session settings the store's statements are written for on a pool
// configuration, each unless the database URL already sets it. Call it before the pool opens.
//
// enable_seqscan=off. pgx prepares each statement once per connection, and after five executions
// PostgreSQL may switch a prepared statement to a generic plan, kept until the table is next
// analyzed. The store's hot statements look rows up by key in tables whose size changes faster
// than autovacuum analyzes them (sagas grows from empty; the outbox fills with dead rows), so a
// generic plan made while a table was small would stay a sequential scan as it grows. With
// sequential scans priced out, every plan, generic ones included, uses the indexes that each of
// the store's statements is written for, and the generic plans save planning every execution
// (docs/decisions.md, decisions 21 and 27).
func ConfigurePool(pc *pgxpool.Config) {
	params := pc.ConnConfig.RuntimeParams
	if _, set := params["enable_seqscan"]; !set {
		params["enable_seqscan"] = "off"
	}
}

package pgstore

import "github.com/jackc/pgx/v5/pgxpool"

// ConfigurePool sets the session settings the store's statements are written for on a pool
// configuration, each unless the database URL already sets it. Call it before the pool opens.
//
// plan_cache_mode=force_custom_plan. pgx prepares each statement once per connection, and once
// PostgreSQL has planned a prepared statement five times it switches to a generic plan if that
// looks no costlier, and keeps it until the table is next analyzed. The store's hot statements look rows up by primary key in
// tables whose size changes faster than autovacuum analyzes them: sagas grows from empty, and
// the outbox fills with dead rows between vacuums. A generic plan made while a table was small
// is a sequential scan (or a hash join over one), and it stays one as the table grows: on a
// fresh database at 140 sagas/s, PostgreSQL read 223,000 saga rows a second in 180 sequential
// scans, and the median saga took 25-57 ms instead of 9-20 (docs/decisions.md, decision 21).
// A custom plan is made for the ids at hand and the table's size at the time, and uses the
// primary key.
func ConfigurePool(pc *pgxpool.Config) {
	params := pc.ConnConfig.RuntimeParams
	if _, set := params["plan_cache_mode"]; !set {
		params["plan_cache_mode"] = "force_custom_plan"
	}
}

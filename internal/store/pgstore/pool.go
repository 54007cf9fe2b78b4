package pgstore

import "github.com/jackc/pgx/v5/pgxpool"

// ConfigurePool sets the session settings the store's statements are written for on a pool
// configuration, each unless the database URL already sets it. Call it before the pool opens.
//
// plan_cache_mode=force_custom_plan. pgx prepares each statement once per connection, and after
// five executions PostgreSQL may switch a prepared statement to a generic plan, kept until the
// table is next analyzed. The store's hot statements look rows up by primary key in tables whose
// size changes faster than autovacuum analyzes them (sagas grows from empty; the outbox fills
// with dead rows), so a generic plan made while a table was small stays a sequential scan as it
// grows. A custom plan is made for the ids at hand and uses the primary key. Decision 21 of
// docs/decisions.md has the measurements.
func ConfigurePool(pc *pgxpool.Config) {
	params := pc.ConnConfig.RuntimeParams
	if _, set := params["plan_cache_mode"]; !set {
		params["plan_cache_mode"] = "force_custom_plan"
	}
}

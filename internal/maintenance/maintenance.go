// Package maintenance holds the coordinator's background loops that keep the database in shape,
// each a small service of its own: Retainer deletes finished sagas and transactions past their
// retention, and ActiveCounter counts the active sagas for admission control. Every coordinator
// instance runs them; they are safe to run concurrently.
package maintenance

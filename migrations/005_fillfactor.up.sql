-- A saga's row is rewritten at every step. When no indexed column changes (status, wake_at,
-- finished_at stay the same between steps; the engine keeps wake_at when it only moves later),
-- PostgreSQL can update it in place on the same page (a HOT update), writing no index entry, but
-- only if the page has room: leave 30% of each new page free for that.
ALTER TABLE sagas SET (fillfactor = 70);
ALTER TABLE transactions SET (fillfactor = 70);

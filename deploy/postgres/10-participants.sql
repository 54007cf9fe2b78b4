-- Run once by the postgres image when its data volume is empty (docker-entrypoint-initdb.d).
-- The simulated participants keep their ledgers and barrier tables in a database of their own, as
-- real participants would; the coordinator uses the image's POSTGRES_DB (sagacoord).
CREATE DATABASE participants OWNER sagacoord;

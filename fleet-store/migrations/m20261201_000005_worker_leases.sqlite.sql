-- Frozen: snowflake worker ids leased by center replicas over one database.
-- Never edit a released migration: add a new one.

CREATE TABLE IF NOT EXISTS "worker_leases" (
  "worker_id" bigint NOT NULL PRIMARY KEY,
  "holder" varchar(64) NOT NULL,
  "expires_at" bigint NOT NULL
);

-- Frozen: the center's own table of release 35e8764, the registry of edges. IF NOT
-- EXISTS adopts a database that release created. Never edit a released migration.

CREATE TABLE IF NOT EXISTS "edges" (
  "id" bigint NOT NULL PRIMARY KEY,
  "name" varchar(128) NOT NULL UNIQUE,
  "site" varchar(128) NOT NULL,
  "worker_id" bigint NOT NULL UNIQUE,
  "secret_hash" varchar(128) NOT NULL,
  "created_at" bigint NOT NULL,
  "updated_at" bigint NOT NULL
);

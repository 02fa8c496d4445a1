-- Frozen: the fleet tables of release 35e8764 (every node has them). A database that
-- release created already holds them, so every statement is IF NOT EXISTS and adopts it.
-- Never edit a released migration: add a new one.

CREATE TABLE IF NOT EXISTS "devices" (
  "id" bigint NOT NULL PRIMARY KEY,
  "name" varchar(128) NOT NULL,
  "device_type" varchar(64) NOT NULL,
  "hw_model" varchar(128) NOT NULL,
  "hw_sn" varchar(128) NOT NULL,
  "sw_version" varchar(64) NOT NULL,
  "sw_last_update" varchar(64) NOT NULL,
  "nics" text NOT NULL,
  "status" varchar(32) NOT NULL,
  "description" varchar(1024) NOT NULL,
  "edge_id" bigint,
  "secret_hash" varchar(128) NOT NULL,
  "live_key" varchar(260) UNIQUE,
  "created_at" bigint NOT NULL,
  "updated_at" bigint NOT NULL,
  "hlc" bigint NOT NULL,
  "origin" bigint NOT NULL,
  "deleted" boolean NOT NULL,
  "field_stamps" text NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx-devices-name" ON "devices" ("name");
CREATE INDEX IF NOT EXISTS "idx-devices-hw_sn" ON "devices" ("hw_sn");
CREATE INDEX IF NOT EXISTS "idx-devices-edge_id" ON "devices" ("edge_id");
CREATE INDEX IF NOT EXISTS "idx-devices-deleted-id" ON "devices" ("deleted", "id");
CREATE INDEX IF NOT EXISTS "idx-devices-edge_id-id" ON "devices" ("edge_id", "id");

CREATE TABLE IF NOT EXISTS "device_groups" (
  "id" bigint NOT NULL PRIMARY KEY,
  "name" varchar(128) NOT NULL,
  "description" varchar(1024) NOT NULL,
  "live_name" varchar(128) UNIQUE,
  "created_at" bigint NOT NULL,
  "updated_at" bigint NOT NULL,
  "hlc" bigint NOT NULL,
  "origin" bigint NOT NULL,
  "deleted" boolean NOT NULL,
  "field_stamps" text NOT NULL
);

CREATE TABLE IF NOT EXISTS "memberships" (
  "id" bigint NOT NULL PRIMARY KEY,
  "group_id" bigint NOT NULL,
  "device_id" bigint NOT NULL,
  "created_at" bigint NOT NULL,
  "updated_at" bigint NOT NULL,
  "hlc" bigint NOT NULL,
  "origin" bigint NOT NULL,
  "deleted" boolean NOT NULL,
  "field_stamps" text NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx-memberships-device_id" ON "memberships" ("device_id");
CREATE UNIQUE INDEX IF NOT EXISTS "uq-memberships-group-device" ON "memberships" ("group_id", "device_id");

CREATE TABLE IF NOT EXISTS "commands" (
  "id" bigint NOT NULL PRIMARY KEY,
  "device_id" bigint NOT NULL,
  "batch_id" bigint,
  "name" varchar(32) NOT NULL,
  "args" text NOT NULL,
  "state" varchar(16) NOT NULL,
  "progress" integer NOT NULL,
  "timeout_s" bigint NOT NULL,
  "deadline_at" bigint NOT NULL,
  "result" text,
  "created_by" varchar(64) NOT NULL,
  "created_at" bigint NOT NULL,
  "updated_at" bigint NOT NULL,
  "hlc" bigint NOT NULL,
  "origin" bigint NOT NULL,
  "deleted" boolean NOT NULL,
  "field_stamps" text NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx-commands-device_id" ON "commands" ("device_id");
CREATE INDEX IF NOT EXISTS "idx-commands-batch_id" ON "commands" ("batch_id");

CREATE TABLE IF NOT EXISTS "desired_configs" (
  "id" bigint NOT NULL PRIMARY KEY,
  "device_id" bigint NOT NULL UNIQUE,
  "version" bigint NOT NULL,
  "report_interval_s" integer NOT NULL,
  "settings" text NOT NULL,
  "created_at" bigint NOT NULL,
  "updated_at" bigint NOT NULL,
  "hlc" bigint NOT NULL,
  "origin" bigint NOT NULL,
  "deleted" boolean NOT NULL,
  "field_stamps" text NOT NULL
);

CREATE TABLE IF NOT EXISTS "change_log" (
  "seq" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
  "table_name" varchar(32) NOT NULL,
  "row_id" bigint NOT NULL,
  "hlc" bigint NOT NULL,
  "origin" bigint NOT NULL,
  "deleted" boolean NOT NULL,
  "payload" text NOT NULL,
  "created_at" bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx-change_log-row_id" ON "change_log" ("row_id");

CREATE TABLE IF NOT EXISTS "link_cursors" (
  "peer_node" bigint NOT NULL PRIMARY KEY,
  "applied" bigint NOT NULL,
  "acked" bigint NOT NULL,
  "updated_at" bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS "device_status" (
  "device_id" bigint NOT NULL PRIMARY KEY,
  "version" bigint NOT NULL,
  "config_version" bigint NOT NULL,
  "status" text NOT NULL,
  "updated_at" bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS "events" (
  "id" bigint NOT NULL PRIMARY KEY,
  "at" bigint NOT NULL,
  "actor" varchar(64) NOT NULL,
  "action" varchar(128) NOT NULL,
  "target_type" varchar(32) NOT NULL,
  "target_id" varchar(64) NOT NULL,
  "outcome" varchar(16) NOT NULL,
  "status_code" integer NOT NULL,
  "detail" text NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx-events-at" ON "events" ("at");
CREATE INDEX IF NOT EXISTS "idx-events-actor" ON "events" ("actor");
CREATE INDEX IF NOT EXISTS "idx-events-action" ON "events" ("action");
CREATE INDEX IF NOT EXISTS "idx-events-target_id" ON "events" ("target_id");

CREATE TABLE IF NOT EXISTS "pulled_logs" (
  "command_id" bigint NOT NULL PRIMARY KEY,
  "device_id" bigint NOT NULL,
  "bytes" bigint NOT NULL,
  "content" MEDIUMBLOB NOT NULL,
  "uploaded_at" bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx-pulled_logs-device_id" ON "pulled_logs" ("device_id");

CREATE TABLE IF NOT EXISTS "users" (
  "id" bigint NOT NULL PRIMARY KEY,
  "username" varchar(64) NOT NULL UNIQUE,
  "password_hash" varchar(255) NOT NULL,
  "role" varchar(16) NOT NULL,
  "created_at" bigint NOT NULL,
  "updated_at" bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS "user_groups" (
  "user_id" bigint NOT NULL,
  "group_id" bigint NOT NULL,
  "created_at" bigint NOT NULL,
  CONSTRAINT "pk-user_groups" PRIMARY KEY ("user_id",
  "group_id")
);
CREATE INDEX IF NOT EXISTS "idx-user_groups-group_id" ON "user_groups" ("group_id");

CREATE TABLE IF NOT EXISTS "settings" (
  "name" varchar(64) NOT NULL PRIMARY KEY,
  "value" text NOT NULL
);

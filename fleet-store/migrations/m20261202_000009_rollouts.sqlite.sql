-- Frozen: rollouts and each device's update in them, replicated between the center
-- and the edges like commands.
-- Never edit a released migration: add a new one.

CREATE TABLE IF NOT EXISTS "rollouts" (
  "id" bigint NOT NULL PRIMARY KEY,
  "name" varchar(128) NOT NULL,
  "artifact_id" bigint NOT NULL,
  "install" text NOT NULL,
  "target" text NOT NULL,
  "waves" text NOT NULL,
  "success_threshold_pct" integer NOT NULL,
  "error_threshold_pct" integer NOT NULL,
  "device_timeout_s" bigint NOT NULL,
  "max_in_flight_per_edge" integer NOT NULL,
  "start_at" bigint NOT NULL,
  "state" varchar(16) NOT NULL,
  "wave" integer NOT NULL,
  "accepted_wave" integer NOT NULL,
  "reason" text NOT NULL,
  "created_by" varchar(64) NOT NULL,
  "created_at" bigint NOT NULL,
  "updated_at" bigint NOT NULL,
  "hlc" bigint NOT NULL,
  "origin" bigint NOT NULL,
  "deleted" boolean NOT NULL,
  "field_stamps" text NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx-rollouts-artifact_id" ON "rollouts" ("artifact_id");

CREATE TABLE IF NOT EXISTS "rollout_devices" (
  "id" bigint NOT NULL PRIMARY KEY,
  "rollout_id" bigint NOT NULL,
  "device_id" bigint NOT NULL,
  "wave" integer NOT NULL,
  "state" varchar(16) NOT NULL,
  "progress" integer NOT NULL,
  "reason" text NOT NULL,
  "log" text NOT NULL,
  "command_id" bigint,
  "started_at" bigint NOT NULL,
  "finished_at" bigint NOT NULL,
  "updated_at" bigint NOT NULL,
  "hlc" bigint NOT NULL,
  "origin" bigint NOT NULL,
  "deleted" boolean NOT NULL,
  "field_stamps" text NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx-rollout_devices-device_id" ON "rollout_devices" ("device_id");
CREATE UNIQUE INDEX IF NOT EXISTS "uq-rollout_devices-rollout-device" ON "rollout_devices" ("rollout_id", "device_id");

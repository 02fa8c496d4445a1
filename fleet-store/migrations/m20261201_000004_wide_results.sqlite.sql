-- Frozen: a command's result, and the change-log entry that carries it, hold more
-- than a TEXT (64 KiB) on MySQL once the agent's largest output is escaped. SQLite
-- bounds neither, but its declared types follow the MySQL ones, and it cannot change
-- a column's type: each table is rebuilt with its rows (the change log keeps its
-- positions, and so its AUTOINCREMENT sequence).
-- Never edit a released migration: add a new one.

CREATE TABLE "commands_m4" (
  "id" bigint NOT NULL PRIMARY KEY,
  "device_id" bigint NOT NULL,
  "batch_id" bigint,
  "name" varchar(32) NOT NULL,
  "args" text NOT NULL,
  "state" varchar(16) NOT NULL,
  "progress" integer NOT NULL,
  "timeout_s" bigint NOT NULL,
  "deadline_at" bigint NOT NULL,
  "result" MEDIUMTEXT,
  "created_by" varchar(64) NOT NULL,
  "created_at" bigint NOT NULL,
  "updated_at" bigint NOT NULL,
  "hlc" bigint NOT NULL,
  "origin" bigint NOT NULL,
  "deleted" boolean NOT NULL,
  "field_stamps" text NOT NULL
);
INSERT INTO "commands_m4" SELECT "id", "device_id", "batch_id", "name", "args", "state", "progress", "timeout_s", "deadline_at", "result", "created_by", "created_at", "updated_at", "hlc", "origin", "deleted", "field_stamps" FROM "commands";
DROP TABLE "commands";
ALTER TABLE "commands_m4" RENAME TO "commands";
CREATE INDEX "idx-commands-device_id" ON "commands" ("device_id");
CREATE INDEX "idx-commands-batch_id" ON "commands" ("batch_id");

CREATE TABLE "change_log_m4" (
  "seq" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
  "table_name" varchar(32) NOT NULL,
  "row_id" bigint NOT NULL,
  "hlc" bigint NOT NULL,
  "origin" bigint NOT NULL,
  "deleted" boolean NOT NULL,
  "payload" MEDIUMTEXT NOT NULL,
  "created_at" bigint NOT NULL
);
INSERT INTO "change_log_m4" SELECT "seq", "table_name", "row_id", "hlc", "origin", "deleted", "payload", "created_at" FROM "change_log";
DROP TABLE "change_log";
ALTER TABLE "change_log_m4" RENAME TO "change_log";
CREATE INDEX "idx-change_log-row_id" ON "change_log" ("row_id");

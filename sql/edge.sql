-- Schema of the edge-cloud database, as `edge-cloud print-schema` prints it.
-- The binary's versioned migrations create it at start, and upgrade older databases;
-- this is for operators who review the database. A test keeps sql/edge.sql equal to
-- what the migrations create.
-- Replicated tables carry hlc (hybrid logical clock stamp), origin (writing node),
-- deleted (tombstone) and field_stamps (per-field HLC stamps, JSON); every write to
-- them is appended to change_log in the same transaction. There are no foreign keys:
-- replicated rows may arrive in any order, so the application keeps integrity.

CREATE TABLE `devices` (
  `id` bigint NOT NULL PRIMARY KEY,
  `name` varchar(128) NOT NULL,
  `device_type` varchar(64) NOT NULL,
  `hw_model` varchar(128) NOT NULL,
  `hw_sn` varchar(128) NOT NULL,
  `sw_version` varchar(64) NOT NULL,
  `sw_last_update` varchar(64) NOT NULL,
  `nics` text NOT NULL,
  `status` varchar(32) NOT NULL,
  `description` varchar(1024) NOT NULL,
  `edge_id` bigint,
  `secret_hash` varchar(128) NOT NULL,
  `live_key` varchar(260) UNIQUE,
  `created_at` bigint NOT NULL,
  `updated_at` bigint NOT NULL,
  `hlc` bigint NOT NULL,
  `origin` bigint NOT NULL,
  `deleted` bool NOT NULL,
  `field_stamps` text NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX `idx-devices-name` ON `devices` (`name`);
CREATE INDEX `idx-devices-hw_sn` ON `devices` (`hw_sn`);
CREATE INDEX `idx-devices-edge_id` ON `devices` (`edge_id`);
CREATE INDEX `idx-devices-deleted-id` ON `devices` (`deleted`, `id`);
CREATE INDEX `idx-devices-edge_id-id` ON `devices` (`edge_id`, `id`);

CREATE TABLE `device_groups` (
  `id` bigint NOT NULL PRIMARY KEY,
  `name` varchar(128) NOT NULL,
  `description` varchar(1024) NOT NULL,
  `live_name` varchar(128) UNIQUE,
  `created_at` bigint NOT NULL,
  `updated_at` bigint NOT NULL,
  `hlc` bigint NOT NULL,
  `origin` bigint NOT NULL,
  `deleted` bool NOT NULL,
  `field_stamps` text NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE `memberships` (
  `id` bigint NOT NULL PRIMARY KEY,
  `group_id` bigint NOT NULL,
  `device_id` bigint NOT NULL,
  `created_at` bigint NOT NULL,
  `updated_at` bigint NOT NULL,
  `hlc` bigint NOT NULL,
  `origin` bigint NOT NULL,
  `deleted` bool NOT NULL,
  `field_stamps` text NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX `idx-memberships-device_id` ON `memberships` (`device_id`);
CREATE UNIQUE INDEX `uq-memberships-group-device` ON `memberships` (`group_id`, `device_id`);

CREATE TABLE `commands` (
  `id` bigint NOT NULL PRIMARY KEY,
  `device_id` bigint NOT NULL,
  `batch_id` bigint,
  `name` varchar(32) NOT NULL,
  `args` text NOT NULL,
  `state` varchar(16) NOT NULL,
  `progress` int NOT NULL,
  `timeout_s` bigint NOT NULL,
  `deadline_at` bigint NOT NULL,
  `result` MEDIUMTEXT,
  `created_by` varchar(64) NOT NULL,
  `created_at` bigint NOT NULL,
  `updated_at` bigint NOT NULL,
  `hlc` bigint NOT NULL,
  `origin` bigint NOT NULL,
  `deleted` bool NOT NULL,
  `field_stamps` text NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX `idx-commands-device_id` ON `commands` (`device_id`);
CREATE INDEX `idx-commands-batch_id` ON `commands` (`batch_id`);

CREATE TABLE `desired_configs` (
  `id` bigint NOT NULL PRIMARY KEY,
  `device_id` bigint NOT NULL UNIQUE,
  `version` bigint NOT NULL,
  `report_interval_s` int NOT NULL,
  `settings` text NOT NULL,
  `created_at` bigint NOT NULL,
  `updated_at` bigint NOT NULL,
  `hlc` bigint NOT NULL,
  `origin` bigint NOT NULL,
  `deleted` bool NOT NULL,
  `field_stamps` text NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE `rollouts` (
  `id` bigint NOT NULL PRIMARY KEY,
  `name` varchar(128) NOT NULL,
  `artifact_id` bigint NOT NULL,
  `install` text NOT NULL,
  `target` text NOT NULL,
  `waves` text NOT NULL,
  `success_threshold_pct` int NOT NULL,
  `error_threshold_pct` int NOT NULL,
  `device_timeout_s` bigint NOT NULL,
  `max_in_flight_per_edge` int NOT NULL,
  `start_at` bigint NOT NULL,
  `state` varchar(16) NOT NULL,
  `wave` int NOT NULL,
  `accepted_wave` int NOT NULL,
  `reason` text NOT NULL,
  `created_by` varchar(64) NOT NULL,
  `created_at` bigint NOT NULL,
  `updated_at` bigint NOT NULL,
  `hlc` bigint NOT NULL,
  `origin` bigint NOT NULL,
  `deleted` bool NOT NULL,
  `field_stamps` text NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX `idx-rollouts-artifact_id` ON `rollouts` (`artifact_id`);

CREATE TABLE `rollout_devices` (
  `id` bigint NOT NULL PRIMARY KEY,
  `rollout_id` bigint NOT NULL,
  `device_id` bigint NOT NULL,
  `wave` int NOT NULL,
  `state` varchar(16) NOT NULL,
  `progress` int NOT NULL,
  `reason` text NOT NULL,
  `log` text NOT NULL,
  `command_id` bigint,
  `started_at` bigint NOT NULL,
  `finished_at` bigint NOT NULL,
  `updated_at` bigint NOT NULL,
  `hlc` bigint NOT NULL,
  `origin` bigint NOT NULL,
  `deleted` bool NOT NULL,
  `field_stamps` text NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX `idx-rollout_devices-device_id` ON `rollout_devices` (`device_id`);
CREATE UNIQUE INDEX `uq-rollout_devices-rollout-device` ON `rollout_devices` (`rollout_id`, `device_id`);

CREATE TABLE `change_log` (
  `seq` bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,
  `table_name` varchar(32) NOT NULL,
  `row_id` bigint NOT NULL,
  `hlc` bigint NOT NULL,
  `origin` bigint NOT NULL,
  `deleted` bool NOT NULL,
  `payload` MEDIUMTEXT NOT NULL,
  `created_at` bigint NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX `idx-change_log-row_id` ON `change_log` (`row_id`);

CREATE TABLE `link_cursors` (
  `peer_node` bigint NOT NULL PRIMARY KEY,
  `applied` bigint NOT NULL,
  `acked` bigint NOT NULL,
  `updated_at` bigint NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE `link_refusals` (
  `peer_node` bigint NOT NULL PRIMARY KEY,
  `refused` bigint NOT NULL,
  `last_rule` varchar(32) NOT NULL,
  `last_at` bigint NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE `device_status` (
  `device_id` bigint NOT NULL PRIMARY KEY,
  `version` bigint NOT NULL,
  `config_version` bigint NOT NULL,
  `status` text NOT NULL,
  `updated_at` bigint NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE `events` (
  `id` bigint NOT NULL PRIMARY KEY,
  `at` bigint NOT NULL,
  `actor` varchar(64) NOT NULL,
  `action` varchar(128) NOT NULL,
  `target_type` varchar(32) NOT NULL,
  `target_id` varchar(64) NOT NULL,
  `outcome` varchar(16) NOT NULL,
  `status_code` int NOT NULL,
  `detail` text NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX `idx-events-at` ON `events` (`at`);
CREATE INDEX `idx-events-actor` ON `events` (`actor`);
CREATE INDEX `idx-events-action` ON `events` (`action`);
CREATE INDEX `idx-events-target_id` ON `events` (`target_id`);

CREATE TABLE `pulled_logs` (
  `command_id` bigint NOT NULL PRIMARY KEY,
  `device_id` bigint NOT NULL,
  `bytes` bigint NOT NULL,
  `content` MEDIUMBLOB NOT NULL,
  `uploaded_at` bigint NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX `idx-pulled_logs-device_id` ON `pulled_logs` (`device_id`);

CREATE TABLE `users` (
  `id` bigint NOT NULL PRIMARY KEY,
  `username` varchar(64) NOT NULL UNIQUE,
  `password_hash` varchar(255) NOT NULL,
  `role` varchar(16) NOT NULL,
  `created_at` bigint NOT NULL,
  `updated_at` bigint NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE `user_groups` (
  `user_id` bigint NOT NULL,
  `group_id` bigint NOT NULL,
  `created_at` bigint NOT NULL,
  PRIMARY KEY `pk-user_groups` (`user_id`,
  `group_id`)
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX `idx-user_groups-group_id` ON `user_groups` (`group_id`);

CREATE TABLE `settings` (
  `name` varchar(64) NOT NULL PRIMARY KEY,
  `value` text NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;


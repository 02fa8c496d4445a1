-- Frozen: the fleet tables of release 35e8764 (every node has them). A database that
-- release created already holds them, so every statement is IF NOT EXISTS and adopts it.
-- Never edit a released migration: add a new one.

CREATE TABLE IF NOT EXISTS `devices` (
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
  `field_stamps` text NOT NULL,
  INDEX `idx-devices-name` (`name`),
  INDEX `idx-devices-hw_sn` (`hw_sn`),
  INDEX `idx-devices-edge_id` (`edge_id`),
  INDEX `idx-devices-deleted-id` (`deleted`, `id`),
  INDEX `idx-devices-edge_id-id` (`edge_id`, `id`)
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS `device_groups` (
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

CREATE TABLE IF NOT EXISTS `memberships` (
  `id` bigint NOT NULL PRIMARY KEY,
  `group_id` bigint NOT NULL,
  `device_id` bigint NOT NULL,
  `created_at` bigint NOT NULL,
  `updated_at` bigint NOT NULL,
  `hlc` bigint NOT NULL,
  `origin` bigint NOT NULL,
  `deleted` bool NOT NULL,
  `field_stamps` text NOT NULL,
  INDEX `idx-memberships-device_id` (`device_id`),
  UNIQUE INDEX `uq-memberships-group-device` (`group_id`, `device_id`)
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS `commands` (
  `id` bigint NOT NULL PRIMARY KEY,
  `device_id` bigint NOT NULL,
  `batch_id` bigint,
  `name` varchar(32) NOT NULL,
  `args` text NOT NULL,
  `state` varchar(16) NOT NULL,
  `progress` int NOT NULL,
  `timeout_s` bigint NOT NULL,
  `deadline_at` bigint NOT NULL,
  `result` text,
  `created_by` varchar(64) NOT NULL,
  `created_at` bigint NOT NULL,
  `updated_at` bigint NOT NULL,
  `hlc` bigint NOT NULL,
  `origin` bigint NOT NULL,
  `deleted` bool NOT NULL,
  `field_stamps` text NOT NULL,
  INDEX `idx-commands-device_id` (`device_id`),
  INDEX `idx-commands-batch_id` (`batch_id`)
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS `desired_configs` (
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

CREATE TABLE IF NOT EXISTS `change_log` (
  `seq` bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,
  `table_name` varchar(32) NOT NULL,
  `row_id` bigint NOT NULL,
  `hlc` bigint NOT NULL,
  `origin` bigint NOT NULL,
  `deleted` bool NOT NULL,
  `payload` text NOT NULL,
  `created_at` bigint NOT NULL,
  INDEX `idx-change_log-row_id` (`row_id`)
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS `link_cursors` (
  `peer_node` bigint NOT NULL PRIMARY KEY,
  `applied` bigint NOT NULL,
  `acked` bigint NOT NULL,
  `updated_at` bigint NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS `device_status` (
  `device_id` bigint NOT NULL PRIMARY KEY,
  `version` bigint NOT NULL,
  `config_version` bigint NOT NULL,
  `status` text NOT NULL,
  `updated_at` bigint NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS `events` (
  `id` bigint NOT NULL PRIMARY KEY,
  `at` bigint NOT NULL,
  `actor` varchar(64) NOT NULL,
  `action` varchar(128) NOT NULL,
  `target_type` varchar(32) NOT NULL,
  `target_id` varchar(64) NOT NULL,
  `outcome` varchar(16) NOT NULL,
  `status_code` int NOT NULL,
  `detail` text NOT NULL,
  INDEX `idx-events-at` (`at`),
  INDEX `idx-events-actor` (`actor`),
  INDEX `idx-events-action` (`action`),
  INDEX `idx-events-target_id` (`target_id`)
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS `pulled_logs` (
  `command_id` bigint NOT NULL PRIMARY KEY,
  `device_id` bigint NOT NULL,
  `bytes` bigint NOT NULL,
  `content` MEDIUMBLOB NOT NULL,
  `uploaded_at` bigint NOT NULL,
  INDEX `idx-pulled_logs-device_id` (`device_id`)
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS `users` (
  `id` bigint NOT NULL PRIMARY KEY,
  `username` varchar(64) NOT NULL UNIQUE,
  `password_hash` varchar(255) NOT NULL,
  `role` varchar(16) NOT NULL,
  `created_at` bigint NOT NULL,
  `updated_at` bigint NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS `user_groups` (
  `user_id` bigint NOT NULL,
  `group_id` bigint NOT NULL,
  `created_at` bigint NOT NULL,
  PRIMARY KEY `pk-user_groups` (`user_id`,
  `group_id`),
  INDEX `idx-user_groups-group_id` (`group_id`)
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS `settings` (
  `name` varchar(64) NOT NULL PRIMARY KEY,
  `value` text NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

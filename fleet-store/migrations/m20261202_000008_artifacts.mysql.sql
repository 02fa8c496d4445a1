-- Frozen: software artifacts at the center, each file in chunks of the database so
-- every replica serves it.
-- Never edit a released migration: add a new one.

CREATE TABLE IF NOT EXISTS `artifacts` (
  `id` bigint NOT NULL PRIMARY KEY,
  `name` varchar(128) NOT NULL,
  `version` varchar(64) NOT NULL,
  `size` bigint NOT NULL,
  `sha256` varchar(64) NOT NULL,
  `device_types` text NOT NULL,
  `models` text NOT NULL,
  `manifest` text NOT NULL,
  `signature` varchar(128) NOT NULL,
  `ready` bool NOT NULL,
  `created_at` bigint NOT NULL,
  `updated_at` bigint NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE UNIQUE INDEX `idx-artifacts-name-version` ON `artifacts` (`name`, `version`);

CREATE TABLE IF NOT EXISTS `artifact_chunks` (
  `artifact_id` bigint NOT NULL,
  `seq` int NOT NULL,
  `data` blob NOT NULL,
  PRIMARY KEY `pk-artifact_chunks` (`artifact_id`, `seq`)
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

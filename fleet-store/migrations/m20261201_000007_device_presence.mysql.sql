-- Frozen: which devices are online at which edge, as the replica holding the edge's
-- link last heard, so every center replica shows the same live view.
-- Never edit a released migration: add a new one.

CREATE TABLE IF NOT EXISTS `device_presence` (
  `device_id` bigint NOT NULL PRIMARY KEY,
  `edge_id` bigint NOT NULL,
  `online` bool NOT NULL,
  `updated_at` bigint NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX `idx-device_presence-updated_at` ON `device_presence` (`updated_at`);
CREATE INDEX `idx-device_presence-edge_id` ON `device_presence` (`edge_id`);

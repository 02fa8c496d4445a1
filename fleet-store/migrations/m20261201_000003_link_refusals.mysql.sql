-- Frozen: how many changes each federation peer sent were refused, added after
-- release 35e8764.
-- Never edit a released migration: add a new one.

CREATE TABLE IF NOT EXISTS `link_refusals` (
  `peer_node` bigint NOT NULL PRIMARY KEY,
  `refused` bigint NOT NULL,
  `last_rule` varchar(32) NOT NULL,
  `last_at` bigint NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

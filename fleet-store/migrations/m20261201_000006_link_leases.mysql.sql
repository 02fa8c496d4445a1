-- Frozen: which center replica holds each edge's federation link.
-- Never edit a released migration: add a new one.

CREATE TABLE IF NOT EXISTS `link_leases` (
  `edge_id` bigint NOT NULL PRIMARY KEY,
  `holder` varchar(64) NOT NULL,
  `expires_at` bigint NOT NULL,
  `since_ms` bigint NOT NULL,
  `clock_skew_ms` bigint NOT NULL
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A workspace's cache settings set with `lyss workspace update`; NULL inherits the config.
ALTER TABLE workspaces ADD COLUMN cache_mode TEXT;
ALTER TABLE workspaces ADD COLUMN cache_ttl_secs BIGINT;
ALTER TABLE workspaces ADD COLUMN cache_scope TEXT;
ALTER TABLE workspaces ADD COLUMN cache_threshold DOUBLE PRECISION;

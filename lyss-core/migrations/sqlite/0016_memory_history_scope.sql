-- The scope a history row belongs to, so that forgetting one end-user's scope takes the history
-- of its deleted memories too (rows written before this migration have none).
ALTER TABLE memory_history ADD COLUMN scope TEXT;
CREATE INDEX memory_history_scope ON memory_history(scope);

-- The key a queued turn was said with, so that its extraction call is charged to that key's
-- budgets too (a key's hard limit covers the memory work its requests cause). NULL for turns
-- queued without a key (imports) and for turns queued before this migration.
ALTER TABLE memory_outbox ADD COLUMN key_id TEXT;

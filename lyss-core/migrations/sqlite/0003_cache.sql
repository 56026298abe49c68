-- Answers served from the cache: which kind of hit, and what it saved (tokens and cost the
-- upstream call would have taken). Billed tokens and cost of a hit stay 0.
ALTER TABLE usage_ledger ADD COLUMN cache TEXT;
ALTER TABLE usage_ledger ADD COLUMN saved_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_ledger ADD COLUMN saved_nusd INTEGER NOT NULL DEFAULT 0;

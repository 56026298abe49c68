-- Provider prompt caching: tokens written to the provider's cache (billed above the input
-- price by Anthropic) and what the provider's cache saved against the same prompt uncached.
ALTER TABLE usage_ledger ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_ledger ADD COLUMN prompt_cache_saved_nusd BIGINT NOT NULL DEFAULT 0;

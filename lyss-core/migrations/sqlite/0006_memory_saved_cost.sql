-- What memory compression saved in money: the prompt tokens it kept from being sent, at the
-- model's input price when the request was made.
ALTER TABLE usage_ledger ADD COLUMN memory_saved_nusd BIGINT NOT NULL DEFAULT 0;

-- A queued turn is claimed by the worker ingesting it (unix ms until which it is taken), so
-- that replicas draining the same outbox never ingest, and pay for, the same turn twice. A
-- claim that runs out (its worker died) makes the turn available again.
ALTER TABLE memory_outbox ADD COLUMN claimed_until BIGINT NOT NULL DEFAULT 0;

-- Conversation turns as memories: who said each one (user, assistant, tool) and where it stood
-- in its conversation. NULL for facts (extracted, or added through the API or the CLI).
ALTER TABLE memories ADD COLUMN role TEXT;
ALTER TABLE memories ADD COLUMN position BIGINT;

-- Every conversation turn a scope remembers, by a hash of its role and text (32 hex digits),
-- so that a client resending its whole history costs a lookup per turn, and no turn is stored
-- twice. A row outlives its memories' deletion (a deleted memory does not come back when the
-- client resends the conversation); "forget me" removes the user's rows.
CREATE TABLE memory_turns (
    scope         TEXT NOT NULL,
    hash          TEXT NOT NULL,
    workspace_id  TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    at            BIGINT NOT NULL,
    PRIMARY KEY (scope, hash)
);
CREATE INDEX memory_turns_user ON memory_turns(workspace_id, user_id);

-- Queued conversation turns carry their role, position and hash; one queued copy per turn.
ALTER TABLE memory_outbox ADD COLUMN role TEXT;
ALTER TABLE memory_outbox ADD COLUMN position BIGINT;
ALTER TABLE memory_outbox ADD COLUMN turn_hash TEXT;
CREATE UNIQUE INDEX memory_outbox_turn ON memory_outbox(scope, turn_hash);

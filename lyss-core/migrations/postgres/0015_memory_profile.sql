-- Profile statements: what a person said about themselves that should shape every answer
-- ("I'm allergic to peanuts", "keep answers short"), recalled into every conversation.
ALTER TABLE memories ADD COLUMN profile BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE memory_outbox ADD COLUMN profile BOOLEAN NOT NULL DEFAULT FALSE;

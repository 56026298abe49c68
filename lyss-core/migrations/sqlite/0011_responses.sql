-- Conversations of the Responses API, kept by lyss so that `previous_response_id` works for
-- every upstream: the chat messages up to and including a response's output, per user.
CREATE TABLE responses (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    messages       TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL
);

-- The queue is claimed user by user, and a user's waiting turns are counted on every request
-- that brings new ones (bounded per user).
CREATE INDEX memory_outbox_user ON memory_outbox(workspace_id, user_id, id);

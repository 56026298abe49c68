-- The Responses API's response object itself, so that `GET /v1/responses/{id}` returns it.
-- Responses kept before this column existed have none (they answer 404 to a GET, and still
-- serve `previous_response_id`).
ALTER TABLE responses ADD COLUMN response TEXT;

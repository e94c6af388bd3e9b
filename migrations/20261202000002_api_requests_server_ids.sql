-- API requests are metered by an id the server gives each request (a
-- client repeating its X-Request-Id was metered once); the client's id is
-- kept beside it for correlation. Pruning by age reads the `at` index.
ALTER TABLE api_requests ADD COLUMN client_request_id text;
CREATE INDEX api_requests_at_idx ON api_requests (at);

-- Idempotency keys that survive a crash: the request running under a key
-- holds it until `locked_until` (renewed while it runs); after a crash the
-- lease passes and a retry takes the key over, completing the request.
-- Keys are hashed with a server secret from now on, so rows of the old
-- hashing are never found again and simply expire.
ALTER TABLE idempotency_keys ADD COLUMN locked_until timestamptz;

-- The purge (every upkeep round, not every request) reads only what expired.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- A retry looks for the commands its first attempt committed under the key
-- (events' metadata carries the key's hash). Only keyed requests' events
-- are indexed.
CREATE INDEX events_idempotency_key ON events ((metadata ->> 'idempotency_key'))
    WHERE (metadata ->> 'idempotency_key') IS NOT NULL;

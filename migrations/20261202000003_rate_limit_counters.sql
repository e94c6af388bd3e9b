-- Request counters of the API's rate limits, shared by every API process
-- (a plan's rate holds however many processes serve it). One row per
-- limited thing (a tenant, or a client address for sign-up, invitation
-- acceptance and failed authentication): the current window's start, when
-- it resets, and the hits in it. Rows past their reset are pruned by the
-- upkeep loop.
--
-- UNLOGGED: a counter is worth nothing after a crash (losing one only
-- forgives a window's requests), and skipping the WAL keeps the upsert
-- every request makes cheap.
CREATE UNLOGGED TABLE rate_limit_counters (
    bucket       text        PRIMARY KEY,
    window_start timestamptz NOT NULL,
    resets_at    timestamptz NOT NULL,
    hits         integer     NOT NULL
);

CREATE INDEX rate_limit_counters_resets_at ON rate_limit_counters (resets_at);

-- Tamper evidence beyond the per-aggregate hash chains: running digests over
-- the global order (one for the whole log, one per tenant), signed checkpoints
-- of them, and each aggregate's head (its last sequence and hash), so that
-- the removal of whole events or aggregates is detected and named.

CREATE TABLE digest_state (
    scope            text        PRIMARY KEY,  -- 'global' or 'tenant:<uuid>'
    position         bigint      NOT NULL,
    count            bigint      NOT NULL,
    digest           text        NOT NULL,
    checkpoint_count bigint      NOT NULL,
    checkpoint_at    timestamptz NOT NULL
);

CREATE TABLE digest_checkpoints (
    scope       text        NOT NULL,
    position    bigint      NOT NULL,
    count       bigint      NOT NULL,
    digest      text        NOT NULL,
    recorded_at timestamptz NOT NULL,
    public_key  text        NOT NULL,
    signature   text        NOT NULL,
    PRIMARY KEY (scope, position)
);

CREATE TABLE aggregate_heads (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    tenant_id      uuid,
    sequence       bigint NOT NULL,
    hash           text   NOT NULL,
    position       bigint NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
CREATE INDEX aggregate_heads_tenant_idx ON aggregate_heads (tenant_id);

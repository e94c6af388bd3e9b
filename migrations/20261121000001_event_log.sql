-- The event log. postgres-es owns appends (it names the first seven columns);
-- everything else is filled by the BEFORE INSERT trigger below, so no writer
-- can forget or forge it.
--
-- Global order: `position` = (writing transaction's xid8 << 20) | ordinal in
-- that transaction. Subscribers only read positions whose xid is below the
-- snapshot's xmin (every such transaction has finished), so an event committed
-- late by a slow transaction is never skipped: its xid holds the horizon back.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'coverwatch_app') THEN
        CREATE ROLE coverwatch_app NOLOGIN;
    END IF;
END
$$;

ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO coverwatch_app;

CREATE TABLE events (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL CHECK (sequence > 0),
    event_type     text        NOT NULL,
    event_version  text        NOT NULL,
    payload        json        NOT NULL,
    metadata       json        NOT NULL,
    position       bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    recorded_at    timestamptz NOT NULL,
    tenant_id      uuid,
    prev_hash      text        NOT NULL,
    hash           text        NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_position_idx ON events (position);
CREATE UNIQUE INDEX events_event_id_idx ON events (event_id);
CREATE INDEX events_tenant_position_idx ON events (tenant_id, position);

-- Tenant slugs are unique across all tenants, including soft-deleted ones (a
-- deleted tenant's slug is never handed to someone else). Enforced by the
-- append itself, so it holds under concurrent sign-ups.
CREATE UNIQUE INDEX events_tenant_slug_idx
    ON events ((payload -> 'TenantCreated' ->> 'slug'))
    WHERE aggregate_type = 'tenant' AND event_type = 'TenantCreated';

-- Required by postgres-es' types; Coverwatch does not use snapshots.
CREATE TABLE snapshots (
    aggregate_type   text   NOT NULL,
    aggregate_id     text   NOT NULL,
    last_sequence    bigint NOT NULL CHECK (last_sequence >= 0),
    current_snapshot bigint NOT NULL CHECK (current_snapshot >= 0),
    payload          json   NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- The canonical encoding of an event for its hash (documented in README.md,
-- recomputed independently by replay/src/hash.rs):
--   SHA-256 over "coverwatch.event.v1" followed by, for each field in order,
--   <octet length>:<utf-8 bytes>,
--   fields: prev_hash, event_id, aggregate_type, aggregate_id, sequence,
--   event_type, event_version, recorded_at (UTC, YYYY-MM-DDTHH:MM:SS.ffffffZ),
--   tenant_id (or empty), payload (stored json text), metadata (stored json text).
CREATE FUNCTION coverwatch_field(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT octet_length(coalesce(value, ''))::text || ':' || coalesce(value, '') || ',' $$;

CREATE FUNCTION events_before_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    ordinal bigint;
    previous text;
BEGIN
    ordinal := coalesce(nullif(current_setting('coverwatch.tx_ordinal', true), ''), '0')::bigint + 1;
    IF ordinal >= 1048576 THEN
        RAISE EXCEPTION 'too many events in one transaction (limit 1048575)';
    END IF;
    PERFORM set_config('coverwatch.tx_ordinal', ordinal::text, true);

    FOREACH previous IN ARRAY ARRAY['tenant_id', 'actor', 'request_id', 'correlation_id', 'causation_id'] LOOP
        IF NEW.metadata ->> previous IS NULL THEN
            RAISE EXCEPTION 'event metadata lacks %', previous USING ERRCODE = 'not_null_violation';
        END IF;
    END LOOP;

    NEW.position := (pg_current_xact_id()::text::bigint << 20) | ordinal;
    NEW.event_id := gen_random_uuid();
    NEW.recorded_at := clock_timestamp();
    NEW.tenant_id := nullif(NEW.metadata ->> 'tenant_id', '')::uuid;

    IF NEW.sequence = 1 THEN
        previous := repeat('0', 64);
    ELSE
        SELECT e.hash INTO previous FROM events e
         WHERE e.aggregate_type = NEW.aggregate_type
           AND e.aggregate_id = NEW.aggregate_id
           AND e.sequence = NEW.sequence - 1;
        IF previous IS NULL THEN
            RAISE EXCEPTION 'sequence gap: % % has no event %', NEW.aggregate_type, NEW.aggregate_id, NEW.sequence - 1;
        END IF;
    END IF;
    NEW.prev_hash := previous;
    NEW.hash := encode(sha256(convert_to(
        'coverwatch.event.v1'
        || coverwatch_field(NEW.prev_hash)
        || coverwatch_field(NEW.event_id::text)
        || coverwatch_field(NEW.aggregate_type)
        || coverwatch_field(NEW.aggregate_id)
        || coverwatch_field(NEW.sequence::text)
        || coverwatch_field(NEW.event_type)
        || coverwatch_field(NEW.event_version)
        || coverwatch_field(to_char(NEW.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
        || coverwatch_field(NEW.tenant_id::text)
        || coverwatch_field(NEW.payload::text)
        || coverwatch_field(NEW.metadata::text),
        'UTF8')), 'hex');
    RETURN NEW;
END
$$;

CREATE TRIGGER events_before_insert
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_before_insert();

CREATE FUNCTION events_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_refuse_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER events_refuse_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

REVOKE ALL ON events FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON events FROM coverwatch_app;
GRANT SELECT, INSERT ON events TO coverwatch_app;

-- The horizon below which every transaction has finished, as a position.
CREATE FUNCTION coverwatch_visible_horizon() RETURNS bigint
    LANGUAGE sql STABLE
    AS $$ SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20 $$;

-- One checkpoint per subscriber, written in the same transaction as its effects.
CREATE TABLE subscriber_checkpoints (
    name             text        PRIMARY KEY,
    position         bigint      NOT NULL DEFAULT 0,
    events_processed bigint      NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Idempotency-Key records: a retried POST returns the first response. Only a
-- hash of the key is stored, and the response (which may hold a freshly
-- issued API key) is encrypted under a key derived from the idempotency key,
-- so only a client that knows it can have the response replayed.
CREATE TABLE idempotency_keys (
    scope           text        NOT NULL,
    key_hash        text        NOT NULL,
    fingerprint     text        NOT NULL,
    response_status integer,
    response        bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key_hash)
);

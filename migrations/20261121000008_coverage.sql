-- Detections and ATT&CK coverage read models (the coverage subscriber owns
-- them all; a rebuild recomputes them from the log).

-- Detections as their events describe them.
CREATE TABLE detections (
    detection_id      uuid        PRIMARY KEY,
    tenant_id         uuid        NOT NULL,
    name              text        NOT NULL,
    source            text        NOT NULL,
    -- {"T1078.004": 0.9, ...}
    techniques        jsonb       NOT NULL,
    scope             jsonb       NOT NULL,
    scope_type        text        NOT NULL,
    account_id        text,
    organization_id   uuid,
    -- organization scope: NULL = every account, else exactly these
    subset            text[],
    status            text        NOT NULL,
    attack_version    text        NOT NULL,
    derived_source_id text,
    mapping_version   text,
    registered_at     timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX detections_tenant_idx ON detections (tenant_id, registered_at, detection_id);
CREATE INDEX detections_account_idx ON detections (tenant_id, account_id) WHERE scope_type = 'account';
CREATE INDEX detections_org_idx ON detections (organization_id) WHERE scope_type = 'organization';

-- Where each organization member sits (copied from discovery events), and
-- whether its last connection attempt failed.
CREATE TABLE coverage_members (
    organization_id uuid    NOT NULL,
    account_id      text    NOT NULL,
    path            text    NOT NULL,
    -- its last connection attempt failed: the organization's sources could
    -- not be confirmed for it, so their derived detections do not apply
    in_error        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (organization_id, account_id)
);

-- One row per connected account: the techniques its own detections cover,
-- those its organization's cover, and their union (every technique, any
-- platform; queries intersect with the denominator they ask for), as
-- bitsets over the ATT&CK catalog's technique order (little-endian words).
CREATE TABLE coverage_accounts (
    tenant_id       uuid    NOT NULL,
    account_id      text    NOT NULL,
    organization_id uuid,
    attack_version  text    NOT NULL,
    own             bytea   NOT NULL,
    inherited       bytea   NOT NULL,
    covered         bytea   NOT NULL,
    -- the figures of its last snapshot (default platform set)
    figures         jsonb,
    position        bigint  NOT NULL,
    PRIMARY KEY (tenant_id, account_id)
);
CREATE INDEX coverage_accounts_org_idx ON coverage_accounts (organization_id) WHERE organization_id IS NOT NULL;

-- Per organization and technique: how many connected accounts cover it, so
-- union (> 0) and minimum (= all) are known without reading every account.
CREATE TABLE coverage_org_techniques (
    organization_id uuid   NOT NULL,
    technique       text   NOT NULL,
    accounts        int    NOT NULL,
    PRIMARY KEY (organization_id, technique)
);

CREATE TABLE coverage_orgs (
    organization_id uuid   PRIMARY KEY,
    tenant_id       uuid   NOT NULL,
    accounts        int    NOT NULL,
    figures         jsonb
);

-- Immutable coverage snapshots on every change of a figure, at the event's
-- position and time (kind 'change'; the subscriber writes them, so a rebuild
-- writes the same rows); pruned to the tenant's history retention.
CREATE TABLE coverage_snapshots (
    tenant_id      uuid        NOT NULL,
    scope          text        NOT NULL,
    scope_id       text        NOT NULL,
    kind           text        NOT NULL,
    position       bigint      NOT NULL,
    taken_at       timestamptz NOT NULL,
    attack_version text        NOT NULL,
    figures        jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, scope, scope_id, kind, position, taken_at)
);
CREATE INDEX coverage_snapshots_time_idx ON coverage_snapshots (scope, scope_id, taken_at);
CREATE INDEX coverage_snapshots_tenant_idx ON coverage_snapshots (tenant_id, taken_at);

-- Daily snapshots of the current figures (kind 'daily'), taken by the
-- server's periodic upkeep, not derived from events: kept outside the
-- subscriber's tables so rebuilds leave them alone. Pruned the same way.
CREATE TABLE coverage_daily_snapshots (LIKE coverage_snapshots INCLUDING ALL);

-- The derived-detections process manager finds the detection it registered
-- for an organization source in the log itself (not a read model).
CREATE INDEX events_derived_detection_idx
    ON events ((payload -> 'DetectionRegistered' -> 'derived_from' ->> 'source_id'))
    WHERE event_type = 'DetectionRegistered';

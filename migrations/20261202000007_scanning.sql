-- Account scanning.
--
-- Scan runs and their accounts: operational state of the scan workflow
-- (like discovery_runs); what a scan found is recorded in the log, as
-- AccountInventory events.
CREATE TABLE scan_runs (
    run_id         uuid        PRIMARY KEY,
    tenant_id      uuid        NOT NULL,
    -- account, organization or schedule, and which.
    scope          text        NOT NULL,
    scope_id       text        NOT NULL,
    path_prefix    text,
    trigger        text        NOT NULL,
    status         text        NOT NULL,
    accounts_total integer     NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz
);
CREATE INDEX scan_runs_tenant_idx ON scan_runs (tenant_id, started_at DESC);

CREATE TABLE scan_run_accounts (
    run_id      uuid        NOT NULL REFERENCES scan_runs ON DELETE CASCADE,
    tenant_id   uuid        NOT NULL,
    account_id  text        NOT NULL,
    -- queued, running, done, failed, or skipped (already being scanned).
    status      text        NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0,
    regions     text[]      NOT NULL DEFAULT '{}',
    calls       jsonb       NOT NULL DEFAULT '{}',
    errors      jsonb       NOT NULL DEFAULT '[]',
    changed     boolean,
    started_at  timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (run_id, account_id)
);
CREATE INDEX scan_run_accounts_latest_idx ON scan_run_accounts (tenant_id, account_id, finished_at DESC);

-- The inventory read model: what each account's scans found, per service
-- and region.
CREATE TABLE inventory_observations (
    tenant_id       uuid        NOT NULL,
    account_id      text        NOT NULL,
    service         text        NOT NULL,
    region          text        NOT NULL,
    kind            text        NOT NULL,
    resource_id     text        NOT NULL,
    enabled         boolean     NOT NULL,
    detail          jsonb       NOT NULL,
    first_seen_at   timestamptz NOT NULL,
    last_changed_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, account_id, service, region, kind, resource_id)
);

CREATE TABLE inventory_accounts (
    tenant_id       uuid        NOT NULL,
    account_id      text        NOT NULL,
    regions         text[]      NOT NULL,
    last_run_id     uuid        NOT NULL,
    last_changed_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, account_id)
);

-- The coverage read model's view of the scans: what is enabled where, and
-- per account the region rule's evaluation and the techniques it covers.
CREATE TABLE coverage_scan_observations (
    tenant_id   uuid    NOT NULL,
    account_id  text    NOT NULL,
    service     text    NOT NULL,
    region      text    NOT NULL,
    kind        text    NOT NULL,
    resource_id text    NOT NULL,
    enabled     boolean NOT NULL,
    PRIMARY KEY (tenant_id, account_id, service, region, kind, resource_id)
);

CREATE TABLE coverage_scan_accounts (
    tenant_id  uuid   NOT NULL,
    account_id text   NOT NULL,
    regions    text[] NOT NULL,
    scanned    bytea  NOT NULL,
    evaluation jsonb  NOT NULL,
    position   bigint NOT NULL,
    PRIMARY KEY (tenant_id, account_id)
);

-- Where scans look: the tenant's narrowing per account and per
-- organization (null: every enabled region); and why an account could not
-- be connected.
ALTER TABLE cloud_accounts ADD COLUMN scan_regions text[];
ALTER TABLE cloud_accounts ADD COLUMN error text;
ALTER TABLE cloud_organizations ADD COLUMN scan_regions text[];

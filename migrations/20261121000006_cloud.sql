-- Cloud read models: the accounts each tenant connected (standalone or from
-- an organization) and its registered cloud organizations.

CREATE TABLE cloud_accounts (
    tenant_id       uuid        NOT NULL,
    account_id      text        NOT NULL,
    alias           text,
    region          text        NOT NULL,
    role_arn        text        NOT NULL,
    environment     text        NOT NULL,
    status          text        NOT NULL,
    source          text        NOT NULL,
    organization_id uuid,
    connected_at    timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, account_id)
);
CREATE INDEX cloud_accounts_filter_idx ON cloud_accounts (tenant_id, status, environment);

CREATE TABLE cloud_organizations (
    id                    uuid        PRIMARY KEY,
    tenant_id             uuid        NOT NULL,
    provider              text        NOT NULL,
    external_org_id       text        NOT NULL,
    management_account_id text        NOT NULL,
    role_arn              text        NOT NULL,
    external_id           text        NOT NULL,
    name                  text        NOT NULL,
    member_role_name      text        NOT NULL,
    status                text        NOT NULL,
    created_at            timestamptz NOT NULL
);
CREATE INDEX cloud_organizations_tenant_idx ON cloud_organizations (tenant_id, created_at, id);

-- The hierarchy as discovery last recorded it (paths materialized from the
-- root: `Root/Production/Web`).
CREATE TABLE cloud_org_units (
    organization_id uuid   NOT NULL,
    ou_id           text   NOT NULL,
    name            text   NOT NULL,
    parent_id       text   NOT NULL,
    path            text   NOT NULL,
    path_ids        text[] NOT NULL,
    PRIMARY KEY (organization_id, ou_id)
);

CREATE TABLE cloud_org_members (
    organization_id uuid   NOT NULL,
    account_id      text   NOT NULL,
    name            text   NOT NULL,
    email           text   NOT NULL,
    aws_status      text   NOT NULL,
    parent_id       text   NOT NULL,
    path            text   NOT NULL,
    path_ids        text[] NOT NULL,
    -- discovered, connected or error (with the reason).
    lifecycle       text   NOT NULL DEFAULT 'discovered',
    status_reason   text,
    PRIMARY KEY (organization_id, account_id)
);
CREATE INDEX cloud_org_members_path_idx ON cloud_org_members (organization_id, path text_pattern_ops);

-- Discovery runs in progress or done: operational state of the background
-- task (its result is recorded in the log as events).
CREATE TABLE discovery_runs (
    run_id          uuid        PRIMARY KEY,
    organization_id uuid        NOT NULL,
    tenant_id       uuid        NOT NULL,
    status          text        NOT NULL,
    pages           bigint      NOT NULL DEFAULT 0,
    ous             bigint      NOT NULL DEFAULT 0,
    accounts        bigint      NOT NULL DEFAULT 0,
    errors          jsonb       NOT NULL DEFAULT '[]',
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz
);

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

-- Read models built by projections/ from the event log. Rows are copies of
-- what events carry; the `version` columns are the aggregate's sequence.

CREATE TABLE tenants (
    id              uuid        PRIMARY KEY,
    slug            text        NOT NULL UNIQUE,
    name            text        NOT NULL,
    industry        text,
    company_size    text,
    contact_email   text,
    billing_email   text,
    owner_member_id uuid        NOT NULL,
    parent_id       uuid,
    hierarchy_path  uuid[]      NOT NULL,
    status          text        NOT NULL,
    suspended_reason text,
    version         bigint      NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz
);
CREATE INDEX tenants_created_idx ON tenants (created_at DESC, id DESC);

CREATE TABLE members (
    id         uuid        PRIMARY KEY,
    tenant_id  uuid        NOT NULL,
    email      text        NOT NULL,
    role       text        NOT NULL,
    status     text        NOT NULL,
    joined_at  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX members_tenant_idx ON members (tenant_id, joined_at, id);

CREATE TABLE invitations (
    id         uuid        PRIMARY KEY,
    tenant_id  uuid        NOT NULL,
    email      text        NOT NULL,
    role       text        NOT NULL,
    status     text        NOT NULL,
    invited_by text        NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX invitations_tenant_idx ON invitations (tenant_id, created_at, id);

CREATE TABLE api_keys (
    id          uuid        PRIMARY KEY,
    tenant_id   uuid        NOT NULL,
    member_id   uuid        NOT NULL,
    name        text        NOT NULL,
    prefix      text        NOT NULL,
    secret_hash text        NOT NULL,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at, id);

-- One index only (the key, which also serves newest-first reads per tenant):
-- catch-up speed is bounded by index maintenance here.
CREATE TABLE audit_log (
    tenant_id       uuid        NOT NULL,
    position        bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    recorded_at     timestamptz NOT NULL,
    actor           text        NOT NULL,
    action          text        NOT NULL,
    resource_type   text        NOT NULL,
    resource_id     text        NOT NULL,
    request_id      text        NOT NULL,
    correlation_id  text        NOT NULL,
    causation_id    text        NOT NULL,
    client_ip       text,
    user_agent      text,
    impersonated_by text,
    summary         text        NOT NULL,
    PRIMARY KEY (tenant_id, position)
);

-- Billing: the subscription and invoice read models, the usage meters' seats,
-- the API request log that meters requests, and Stripe events for customers
-- Coverwatch does not know (kept for the platform admin, never applied).

CREATE TABLE subscriptions (
    tenant_id              uuid        PRIMARY KEY,
    tier                   text        NOT NULL,
    status                 text        NOT NULL,
    cycle                  text,
    stripe_customer_id     text,
    stripe_subscription_id text,
    amount_cents           bigint,
    current_period_start   timestamptz,
    current_period_end     timestamptz,
    cancel_at_period_end   boolean     NOT NULL,
    trial_end              timestamptz,
    -- The next time-driven transition (period end, grace end), for the sweeper.
    next_transition_at     timestamptz,
    -- The folded Subscription: entitlements are computed from it at query time.
    state                  jsonb       NOT NULL,
    version                bigint      NOT NULL,
    updated_at             timestamptz NOT NULL
);
CREATE INDEX subscriptions_due_idx ON subscriptions (next_transition_at) WHERE next_transition_at IS NOT NULL;
CREATE INDEX subscriptions_tier_idx ON subscriptions (tier, status);

CREATE TABLE invoices (
    tenant_id          uuid        NOT NULL,
    invoice_id         text        NOT NULL,
    number             text,
    subscription_id    text,
    status             text        NOT NULL,
    currency           text        NOT NULL,
    amount_due_cents   bigint      NOT NULL,
    amount_paid_cents  bigint      NOT NULL,
    hosted_invoice_url text,
    invoice_pdf        text,
    period_start       timestamptz,
    period_end         timestamptz,
    -- Log position of the event that wrote the row: later events win.
    position           bigint      NOT NULL,
    recorded_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, invoice_id)
);
CREATE INDEX invoices_tenant_idx ON invoices (tenant_id, recorded_at DESC);

-- One row per seat: a member not removed, or a pending invitation (which
-- stops counting when it expires).
CREATE TABLE usage_seats (
    tenant_id  uuid        NOT NULL,
    seat_id    uuid        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('member', 'invitation')),
    expires_at timestamptz,
    PRIMARY KEY (tenant_id, seat_id)
);

-- Threshold crossings (80 % / 100 %) recorded in the log, per period.
CREATE TABLE usage_thresholds (
    tenant_id    uuid        NOT NULL,
    metric       text        NOT NULL,
    threshold    smallint    NOT NULL,
    period_start timestamptz NOT NULL,
    used         bigint      NOT NULL,
    limit_value  bigint      NOT NULL,
    recorded_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, metric, threshold, period_start)
);

-- Metered API requests: one row per request id, so a retried request that
-- carries its X-Request-Id again is counted once.
CREATE TABLE api_requests (
    tenant_id  uuid        NOT NULL,
    request_id text        NOT NULL,
    at         timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, request_id)
);
CREATE INDEX api_requests_tenant_at_idx ON api_requests (tenant_id, at);

CREATE TABLE stripe_unmatched_events (
    event_id      text        PRIMARY KEY,
    event_type    text        NOT NULL,
    customer_id   text        NOT NULL,
    event_created timestamptz,
    payload       jsonb       NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);

-- Webhooks find the tenant of a Stripe customer in the log itself.
CREATE INDEX events_stripe_customer_idx ON events (((payload -> 'StripeCustomerLinked' ->> 'customer_id')))
    WHERE event_type = 'StripeCustomerLinked';

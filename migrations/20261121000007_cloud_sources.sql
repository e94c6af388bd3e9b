-- What discovery finds beside the hierarchy: the last run's own outcome,
-- delegated administrators and SCPs (with targets; preventive controls, never
-- detections) on the organization, and its organization-level sources.

ALTER TABLE cloud_organizations
    ADD COLUMN discovery_status         text,
    ADD COLUMN delegated_administrators jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN service_control_policies jsonb NOT NULL DEFAULT '[]';

CREATE TABLE cloud_org_sources (
    organization_id uuid  NOT NULL,
    source_id       text  NOT NULL,
    -- cloudtrail_organization_trail, config_aggregator, security_hub, guardduty
    kind            text  NOT NULL,
    name            text  NOT NULL,
    account_id      text  NOT NULL,
    detail          jsonb NOT NULL,
    PRIMARY KEY (organization_id, source_id)
);

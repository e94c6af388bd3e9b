-- An organization's accounts are always one tenant's: without this the
-- planner multiplies the two filters' selectivities, expects a single row
-- for "tenant and organization", and joins the members one index probe per
-- account (measured: 3 ms against 2 ms with a hash join for 1,000 accounts).
CREATE STATISTICS coverage_accounts_tenant_organization (dependencies)
    ON tenant_id, organization_id FROM coverage_accounts;

-- The coverage projection reads an account's detections with
-- `tenant_id = $1 AND account_id = ANY($2)`. Led by tenant_id, the index
-- answers that well only while the statistics are fresh: with stale ones
-- (a table just rebuilt, or thousands of detections registered within a
-- minute) the planner expects one row per tenant, keeps account_id as a
-- filter and reads every account detection of the tenant, 1.5–3 ms a call
-- at 10,000 detections against 0.04 ms. Led by account_id, the lookup is
-- an index condition whatever the statistics say.
CREATE INDEX detections_account_lookup_idx ON detections (account_id, tenant_id) WHERE scope_type = 'account';
-- Named by the first migration, or by LIKE after a rebuild switched tables.
DROP INDEX IF EXISTS detections_account_idx;
DROP INDEX IF EXISTS detections_tenant_id_account_id_idx;

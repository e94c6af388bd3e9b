-- The usage threshold watcher is now a subscriber of its own (it used to run
-- inside the billing read model's batches). On a database that already has
-- history it starts where billing is, so it does not examine again what the
-- old watcher already did; on a fresh database both start at 0.
INSERT INTO subscriber_checkpoints (name, position)
SELECT 'usage_thresholds', position FROM subscriber_checkpoints WHERE name = 'billing'
ON CONFLICT (name) DO NOTHING;

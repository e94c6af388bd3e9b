-- The Subscription aggregate now keeps Stripe's reports and derives its
-- Stripe side from them. Its snapshots predate the reports: drop them, so
-- the next load folds the log from the start (snapshots are only a cache).
DELETE FROM snapshots WHERE aggregate_type = 'subscription';

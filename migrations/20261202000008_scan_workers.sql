-- Which worker process scanned an account in a run (host:pid), for the
-- people who run Coverwatch and for the test that two workers share a run.
ALTER TABLE scan_run_accounts ADD COLUMN worker text;

-- Signed digest checkpoints are written once, like the events they sign:
-- the serving role appends them and may not change or remove them.
REVOKE UPDATE, DELETE, TRUNCATE ON digest_checkpoints FROM coverwatch_app;

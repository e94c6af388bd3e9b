-- Events the Kafka publisher could not send whole (too large): each was
-- published as a notice without its payload instead. See projections/src/kafka.rs.
CREATE TABLE publisher_dead_letters (
    position       bigint      PRIMARY KEY,
    event_id       uuid        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    size           bigint      NOT NULL,
    reason         text        NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);

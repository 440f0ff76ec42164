-- The raw layer the stream writes and dbt reads. Idempotent: safe to apply on any database.
create schema if not exists raw;

-- One row per Kafka record carrying a valid event (every contract field + Kafka coordinates).
create table if not exists raw.openaq_measurements (
    schema_version   smallint         not null,
    source           text             not null,
    ingest_mode      text             not null,
    ingested_at      timestamptz      not null,
    location_id      bigint           not null,
    location_name    text,
    sensor_id        bigint           not null,
    parameter_id     integer          not null,
    parameter        text             not null,
    units            text             not null,
    value            double precision,
    period_start     timestamptz      not null,
    period_end       timestamptz      not null,
    timezone         text             not null,
    latitude         double precision,
    longitude        double precision,
    country_code     text,
    provider         text,
    is_mobile        boolean          not null,
    is_monitor       boolean          not null,
    flagged          boolean          not null,
    coverage_percent double precision,
    kafka_topic      text             not null,
    kafka_partition  integer          not null,
    kafka_offset     bigint           not null,
    kafka_timestamp  timestamptz,
    loaded_at        timestamptz      not null default clock_timestamp(),
    constraint openaq_measurements_kafka_key primary key (kafka_topic, kafka_partition, kafka_offset)
);
-- the warehouse's incremental filters
create index if not exists openaq_measurements_loaded_at on raw.openaq_measurements (loaded_at);
create index if not exists openaq_measurements_sensor_period
    on raw.openaq_measurements (sensor_id, period_end);

-- Kafka records that are not valid events: kept, with the reason, never silently dropped.
create table if not exists raw.openaq_quarantine (
    kafka_topic      text        not null,
    kafka_partition  integer     not null,
    kafka_offset     bigint      not null,
    kafka_timestamp  timestamptz,
    kafka_key        text,
    payload          text,
    reason           text        not null,
    quarantined_at   timestamptz not null default clock_timestamp(),
    constraint openaq_quarantine_kafka_key primary key (kafka_topic, kafka_partition, kafka_offset)
);

-- One row per streaming micro-batch (rewritten if Spark replays the batch).
create table if not exists raw.stream_batches (
    query_name        text        not null,
    batch_id          bigint      not null,
    source            text        not null,
    rows_read         bigint      not null,
    rows_valid        bigint      not null,
    rows_quarantined  bigint      not null,
    rows_inserted     bigint      not null,
    rows_quarantine_inserted bigint not null,
    duration_ms       bigint      not null,
    lag_records       bigint,
    end_offsets       jsonb       not null,
    started_at        timestamptz not null,
    finished_at       timestamptz not null,
    constraint stream_batches_pkey primary key (query_name, batch_id)
);

-- AQI alerts (aqi/aqi_alerts.py): one row per episode of unhealthy air at a location, for a
-- parameter. After each successful openaq_elt run the alert step reads gold.latest: a pair
-- whose NowCast AQI category reaches the threshold (AQ_AQI_ALERT_CATEGORY, "Unhealthy" by
-- default) and has no open episode opens one; an open episode follows its newer readings
-- (worst category and AQI so far, last AQI) and is cleared by the first reading below the
-- threshold. Not a dbt model: an episode is what was observed run after run, which a
-- rebuild from gold.latest (one reading per pair) could not reproduce, and a full refresh
-- must neither lose past episodes nor send their alerts again.
create schema if not exists gold;

create table if not exists gold.aqi_alerts (
    -- ids
    alert_id          bigint generated always as identity primary key,
    location_id       bigint      not null,
    parameter         text        not null,

    -- descriptions (of the reading that opened the episode)
    location_name     text,
    country_code      text,
    latitude          double precision,
    longitude         double precision,
    units             text,

    -- values
    category          text        not null,  -- the worst NowCast AQI category of the episode
    peak_aqi          integer     not null,  -- its highest NowCast AQI
    last_aqi          integer     not null,  -- the AQI of its newest reading
    last_category     text        not null,

    -- timestamps
    since             timestamptz not null,  -- the reading that opened the episode
    last_measured_at  timestamptz not null,  -- the newest reading the episode has seen
    cleared_at        timestamptz,           -- the first reading below the threshold; null = open
    notified_at       timestamptz,           -- when a channel took its alert (null: none yet)
    opened_run_id     text,
    cleared_run_id    text,
    updated_at        timestamptz not null default now(),

    constraint aqi_alerts_cleared_after_since check (cleared_at is null or cleared_at >= since)
);

-- at most one open episode per location and parameter
create unique index if not exists aqi_alerts_one_open
    on gold.aqi_alerts (location_id, parameter) where cleared_at is null;
create index if not exists aqi_alerts_since on gold.aqi_alerts (since);

{#- gold.pm25_15min with each location's name and country (the dashboard's 15-minute trend). -#}
with

pm25_15min as (
    select * from {{ ref('pm25_15min') }}
),

location_names as (
    select * from {{ ref('location_names') }}
),

named_windows as (
    select
        -- ids
        p.location_id,
        l.location_name,
        l.country_code,
        -- values
        p.pm25_avg,
        p.sensor_count,
        p.reading_count,
        -- timestamps
        p.window_start,
        p.window_end
    from pm25_15min as p
    inner join location_names as l on l.location_id = p.location_id
)

select * from named_windows

{#- The PM2.5 (µg/m³) rows of gold.daily_avg with each location's country (the dashboard's
    calendar and daily charts). -#}
with

daily_avg as (
    select * from {{ ref('daily_avg') }}
),

location_names as (
    select * from {{ ref('location_names') }}
),

pm25_days as (
    select
        -- ids
        d.location_id,
        d.location_name,
        l.country_code,
        -- values
        d.avg_value as pm25_avg,
        d.hours_covered,
        d.is_complete,
        d.aqi,
        d.aqi_category,
        -- dates
        d.local_date
    from daily_avg as d
    inner join location_names as l on l.location_id = d.location_id
    where d.parameter = 'pm25' and d.units = 'µg/m³'
)

select * from pm25_days

{#- Each location and parameter's current 30-day exceedance: the row of its newest local
    day in gold.exceedance_30d, with the location's name (the dashboard's leaderboard). -#}
with

exceedance_30d as (
    select * from {{ ref('exceedance_30d') }}
),

location_names as (
    select * from {{ ref('location_names') }}
),

newest_local_day as (
    select
        location_id,
        parameter,
        max(local_date) as local_date
    from exceedance_30d
    group by location_id, parameter
),

current_window as (
    select
        -- ids
        e.location_id,
        l.location_name,
        l.country_code,
        e.parameter,
        -- values
        e.complete_days,
        e.days_over_who,
        e.days_over_us,
        e.who_24h_limit,
        e.us_24h_limit,
        -- dates
        e.local_date,
        e.window_start_date
    from exceedance_30d as e
    inner join newest_local_day as n
        on
            n.location_id = e.location_id
            and n.parameter = e.parameter
            and n.local_date = e.local_date
    inner join location_names as l on l.location_id = e.location_id
)

select * from current_window

-- depends_on: {{ ref('int_measurements__current') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ delete_affected(['location_id', 'parameter', 'local_date'], exceedance_affected_days()) }}",
        post_hook="{{ advance_watermark(ref('int_measurements__current')) }}",
    )
}}

-- For each location, pollutant (PM2.5, PM10 in µg/m³) and local day with a daily mean, the
-- trailing 30 local days including that day (exactly 30 calendar days): how many were
-- complete, and among the complete ones how many were above the WHO 2021 24-hour guideline
-- (15 / 45 µg/m³) and above the US 24-hour standard (35 / 150 µg/m³).

with daily as not materialized (

    select * from {{ ref('daily_avg') }}
    where parameter in ('pm25', 'pm10') and units = 'µg/m³'

),

limits as not materialized (

    select * from {{ ref('pollutant_limits') }}

),

{% if is_incremental() %}
affected_days as (

    {{ exceedance_affected_days() }}

),

report_days as (

    select daily.location_id, daily.parameter, daily.local_date
    from daily
    inner join affected_days using (location_id, parameter, local_date)

),
{% else %}
report_days as (

    select location_id, parameter, local_date from daily

),
{% endif %}

trailing_windows as (

    select
        report_days.location_id,
        report_days.parameter,
        report_days.local_date,
        count(*)::integer as days_with_data,
        count(*) filter (where window_days.is_complete)::integer as complete_days,
        count(*) filter (
            where window_days.is_complete and window_days.avg_value > limits.who_24h
        )::integer as days_over_who,
        count(*) filter (
            where window_days.is_complete and window_days.avg_value > limits.us_24h
        )::integer as days_over_us,
        max(limits.who_24h) as who_24h_limit,
        max(limits.us_24h) as us_24h_limit
    from report_days
    inner join daily as window_days
        on window_days.location_id = report_days.location_id
        and window_days.parameter = report_days.parameter
        and window_days.local_date between report_days.local_date - 29 and report_days.local_date
    inner join limits
        on limits.parameter = report_days.parameter
        and limits.units = 'µg/m³'
    group by report_days.location_id, report_days.parameter, report_days.local_date

),

final as (

    select
        -- ids
        location_id,
        parameter,

        -- values
        complete_days,
        days_over_who,
        days_over_us,
        days_with_data,
        who_24h_limit,
        us_24h_limit,

        -- dates
        local_date,
        (local_date - 29)::date as window_start_date,

        -- timestamps
        now() as rebuilt_at

    from trailing_windows

)

select * from final

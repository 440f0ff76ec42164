-- depends_on: {{ ref('int_measurements__current') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        indexes=[{'columns': ['local_date']}],
        pre_hook="{{ delete_affected_ranges(['location_id', 'parameter', 'units'], 'local_date', 'first_local_date', 'end_local_date', daily_affected_ranges()) }}",
        post_hook="{{ advance_watermark(ref('int_measurements__current')) }}",
    )
}}

-- Daily means per location, parameter, units and LOCAL calendar day: the readings of each
-- local wall-clock hour are averaged first, then the hourly means. A day is complete with
-- at least 18 hourly means (EPA's 75% rule); complete PM2.5 and PM10 days get the daily
-- AQI sub-index (EPA 2024 breakpoints, truncation included).

with measurements as not materialized (

    select * from {{ ref('measurements') }}

),

{% if is_incremental() %}
-- every day of each run of affected days (macros/affected.sql) is recomputed
affected_ranges as (

    {{ daily_affected_ranges() }}

),

candidate_readings as (

    -- one range scan of the (location_id, parameter, period_end) index per range, between
    -- the UTC bounds of its local days
    select
        affected_ranges.first_local_date,
        affected_ranges.end_local_date,
        series_readings.*
    from affected_ranges
    cross join lateral (
        select * from measurements
        where measurements.location_id = affected_ranges.location_id
            and measurements.parameter = affected_ranges.parameter
            and measurements.units = affected_ranges.units
            and measurements.period_end > affected_ranges.first_instant
            and measurements.period_end <= affected_ranges.last_instant
        offset 0  -- keeps the scan per range (not pulled up into a join)
    ) as series_readings

),
{% else %}
candidate_readings as (

    select * from measurements

),
{% endif %}

readings_by_hour as (

    select
        location_id,
        parameter,
        units,
        timezone,
        location_name,
        value,
        {{ local_hour('period_end', 'timezone') }} as local_hour
    from candidate_readings
    {% if is_incremental() %}
    -- a reading's own timezone decides its day: keep the range exact even if it differs
    where ({{ local_hour('period_end', 'timezone') }})::date >= first_local_date
        and ({{ local_hour('period_end', 'timezone') }})::date < end_local_date
    {% endif %}

),

hourly_means as (

    select
        location_id,
        parameter,
        units,
        local_hour,
        local_hour::date as local_date,
        max(timezone) as timezone,
        max(location_name) as location_name,
        -- numeric sums are exact: the result does not depend on row order, so an
        -- incremental build equals a full one bit for bit
        avg(value::numeric) as hourly_avg
    from readings_by_hour
    group by location_id, parameter, units, local_hour

),

daily_means as (

    select
        location_id,
        parameter,
        units,
        local_date,
        max(timezone) as timezone,
        max(location_name) as location_name,
        avg(hourly_avg) as avg_value,
        count(*)::integer as hours_covered
    from hourly_means
    group by location_id, parameter, units, local_date

),

with_aqi as (

    select
        daily_means.*,
        daily_means.hours_covered >= {{ var('daily_complete_hours') }} as is_complete,
        case
            when daily_means.parameter in ('pm25', 'pm10')
                and daily_means.units = 'µg/m³'
                and daily_means.hours_covered >= {{ var('daily_complete_hours') }}
            then {{ aqi_subindex('daily_means.avg_value', 'daily_means.parameter', 'daily_means.units') }}
        end as aqi
    from daily_means

),

final as (

    select
        -- ids
        location_id,
        parameter,
        units,

        -- descriptions
        location_name,
        timezone,

        -- values
        avg_value::double precision as avg_value,
        hours_covered,
        is_complete,
        aqi,
        {{ aqi_category('aqi') }} as aqi_category,

        -- dates
        local_date,

        -- timestamps
        now() as rebuilt_at

    from with_aqi

)

select * from final

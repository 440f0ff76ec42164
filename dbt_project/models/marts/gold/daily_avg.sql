-- depends_on: {{ ref('int_measurements__current') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        indexes=[
            {'columns': ['location_id', 'parameter', 'units', 'local_date'], 'unique': True},
            {'columns': ['local_date']},
        ],
        pre_hook="{{ delete_affected(['location_id', 'parameter', 'units', 'local_date'], daily_affected_days()) }}",
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
affected_days as (

    {{ daily_affected_days() }}

),

affected_ranges as (

    select
        location_id,
        parameter,
        units,
        -- bounds in UTC computed on this side, so the (location, parameter, period_end)
        -- index narrows the scan to the affected days instead of the location's history
        min(local_date::timestamp at time zone timezone) as first_instant,
        max((local_date + 1)::timestamp at time zone timezone) as last_instant
    from affected_days
    group by location_id, parameter, units

),

candidate_readings as (

    select measurements.*
    from measurements
    inner join affected_ranges
        on measurements.location_id = affected_ranges.location_id
        and measurements.parameter = affected_ranges.parameter
        and measurements.units = affected_ranges.units
        and measurements.period_end > affected_ranges.first_instant
        and measurements.period_end <= affected_ranges.last_instant

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

{% if is_incremental() %}
affected_hourly_means as (

    select hourly_means.*
    from hourly_means
    inner join affected_days using (location_id, parameter, units, local_date)

),
{% else %}
affected_hourly_means as (

    select * from hourly_means

),
{% endif %}

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
    from affected_hourly_means
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
        local_date

    from with_aqi

)

select * from final

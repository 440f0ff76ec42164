-- depends_on: {{ ref('int_measurements__current') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ delete_affected_ranges(['location_id'], 'window_start', 'first_window_start', 'end_window_start', pm25_affected_ranges()) }}",
        post_hook="{{ advance_watermark(ref('int_measurements__current')) }}",
    )
}}

-- PM2.5 per location and UTC quarter-hour. A reading counts in every 15-minute window its
-- period overlaps; each sensor's readings in a window are averaged first, then the sensors
-- of the location (µg/m³ only).

with measurements as not materialized (

    select * from {{ ref('measurements') }}
    where parameter = 'pm25' and units = 'µg/m³'

),

{% if is_incremental() %}
-- every window of each run of affected windows (macros/affected.sql) is recomputed
affected_ranges as (

    {{ pm25_affected_ranges() }}

),

candidate_readings as (

    -- one range scan of the (location_id, parameter, period_end) index per range: as a
    -- plain join PostgreSQL cannot estimate the ranges and scans all of silver
    select
        affected_ranges.first_window_start,
        affected_ranges.end_window_start,
        location_readings.*
    from affected_ranges
    cross join lateral (
        select * from measurements
        where measurements.location_id = affected_ranges.location_id
            and measurements.period_end > affected_ranges.first_window_start
            and measurements.period_start < affected_ranges.end_window_start
        offset 0  -- keeps the scan per range (not pulled up into a join)
    ) as location_readings

),
{% else %}
candidate_readings as (

    select * from measurements

),
{% endif %}

readings_by_window as (

    select
        candidate_readings.location_id,
        candidate_readings.sensor_id,
        windows.window_start,
        candidate_readings.value
    from candidate_readings
    cross join lateral {{ quarter_hours('candidate_readings.period_start', 'candidate_readings.period_end') }} as windows(window_start)
    {% if is_incremental() %}
    where windows.window_start >= candidate_readings.first_window_start
        and windows.window_start < candidate_readings.end_window_start
    {% endif %}

),

sensor_means as (

    select
        location_id,
        window_start,
        sensor_id,
        avg(value::numeric) as sensor_avg,  -- exact, so independent of row order
        count(*) as readings
    from readings_by_window
    group by location_id, window_start, sensor_id

),

windows as (

    select
        -- ids
        location_id,

        -- values
        avg(sensor_avg)::double precision as pm25_avg,
        count(*) as sensor_count,
        sum(readings)::integer as reading_count,

        -- timestamps
        window_start,
        window_start + interval '15 minutes' as window_end,
        now() as rebuilt_at

    from sensor_means
    group by location_id, window_start

)

select * from windows

-- depends_on: {{ ref('int_measurements__current') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='append_new_columns',
        pre_hook="{{ delete_affected(['location_id', 'parameter'], latest_affected()) }}",
        post_hook=[
            "{{ advance_watermark(ref('int_measurements__current')) }}",
            "update {{ this }} set
                age_minutes = floor(extract(epoch from ({{ as_of() }} - measured_at)) / 60)::integer,
                is_stale = measured_at < {{ as_of() }} - interval '{{ var(\"stale_after_hours\") }} hours',
                rebuilt_at = now()",
        ],
    )
}}

-- Per location and parameter, the newest valid reading, with the NowCast-based AQI for PM2.5
-- and PM10 (hourly means of the 12 UTC hours ending with the newest reading's hour) and
-- is_stale when that reading is older than stale_after_hours (3 h by default). Ages are
-- refreshed for every row on each run. New columns reach an existing table on the next run
-- (on_schema_change='append_new_columns'), without a full refresh.

with measurements as not materialized (

    select * from {{ ref('measurements') }}

),

{% if is_incremental() %}
affected as (

    {{ latest_affected() }}

),
{% else %}
affected as (

    select distinct location_id, parameter from measurements

),
{% endif %}

-- one index lookup per (location, parameter): the cost follows the affected pairs, not the
-- history behind them
newest as (

    select newest_reading.*
    from affected
    cross join lateral (
        select *
        from measurements
        where measurements.location_id = affected.location_id
          and measurements.parameter = affected.parameter
        order by measurements.period_end desc, measurements.sensor_id
        limit 1
    ) as newest_reading

),

-- the 12 hourly means of the NowCast, per pair, by one index range scan each: joined to
-- newest instead, a misestimate of newest's size (1 row) re-ran the aggregation for every pair
with_nowcast as (

    select
        newest.*,
        {{ nowcast() }} as nowcast
    from newest
    cross join lateral (
        select
            {% for i in range(1, 13) -%}
            max(hourly_means.hourly_avg) filter (where hourly_means.hour_index = {{ i }}) as h{{ i }}{% if not loop.last %},{% endif %}
            {% endfor %}
        from (
            select
                (extract(epoch from (
                    {{ utc_hour('newest.period_end') }} - {{ utc_hour('readings.period_end') }}
                )) / 3600)::integer + 1 as hour_index,
                avg(readings.value::numeric) as hourly_avg
            from measurements as readings
            where newest.parameter in ('pm25', 'pm10') and newest.units = 'µg/m³'
                and readings.location_id = newest.location_id
                and readings.parameter = newest.parameter
                and readings.units = newest.units
                and readings.period_end <= newest.period_end
                and readings.period_end > (
                    {{ utc_hour('newest.period_end') }} - interval '11 hours'
                ) at time zone 'UTC'
            group by 1
        ) as hourly_means
    ) as hours_pivoted

),

with_aqi as (

    select
        with_nowcast.*,
        {{ aqi_subindex('with_nowcast.nowcast', 'with_nowcast.parameter', 'with_nowcast.units') }} as aqi
    from with_nowcast

),

final as (

    select
        -- ids
        location_id,
        sensor_id,

        -- descriptions
        location_name,
        country_code,
        timezone,
        latitude,
        longitude,
        parameter,
        units,

        -- values
        value,
        nowcast::double precision as nowcast,
        aqi,
        {{ aqi_category('aqi') }} as aqi_category,
        floor(extract(epoch from ({{ as_of() }} - period_end)) / 60)::integer as age_minutes,
        period_end < {{ as_of() }} - interval '{{ var("stale_after_hours") }} hours' as is_stale,

        -- timestamps
        period_end as measured_at,
        ingested_at,
        now() as rebuilt_at

    from with_aqi

)

select * from final

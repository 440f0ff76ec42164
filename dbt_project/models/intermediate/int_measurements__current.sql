{{
    config(
        materialized='incremental',
        unique_key=['sensor_id', 'period_end'],
        incremental_strategy='delete+insert',
        indexes=[
            {'columns': ['sensor_id', 'period_end'], 'unique': True},
            {'columns': ['_processed_at']},
        ],
        pre_hook=["{{ ensure_raw_statistics() }}", "{{ record_raw_watermark() }}"],
        post_hook="{{ advance_raw_watermark() }}",
    )
}}

-- The current version of every reading: per (sensor_id, period_end) the most recently
-- ingested raw record wins, so replays, duplicates and re-sent corrections collapse. Each
-- reading is classified valid or rejected (with the reason). Incrementally, only the
-- readings with a raw record loaded since the last run (macros/incremental.sql,
-- record_raw_watermark) are recomputed from all their versions, and stamped with this run's
-- _processed_at for the models downstream.

with measurements as not materialized (

    select * from {{ ref('stg_openaq__measurements') }}

),

limits as not materialized (

    select * from {{ ref('pollutant_limits') }}

),

{% if is_incremental() %}
changed_keys as (

    select distinct sensor_id, period_end
    from measurements
    where loaded_at > {{ watermark() }}

),

versions as (

    -- every version of each changed reading, by one index lookup per key: joined plainly
    -- through the staging view, PostgreSQL scans the whole raw table instead
    select key_versions.*
    from changed_keys
    cross join lateral (
        select * from measurements
        where measurements.sensor_id = changed_keys.sensor_id
            and measurements.period_end = changed_keys.period_end
        offset 0  -- keeps the lookup per key (not pulled up into a join)
    ) as key_versions

),
{% else %}
versions as (

    select * from measurements

),
{% endif %}

ranked as (

    select
        *,
        row_number() over (
            partition by sensor_id, period_end
            order by ingested_at desc, kafka_timestamp desc nulls last,
                     kafka_partition desc, kafka_offset desc
        ) as version_rank,
        count(*) over (partition by sensor_id, period_end) as version_count
    from versions

),

latest_versions as (

    select * from ranked where version_rank = 1

),

classified as (

    select
        latest_versions.*,
        case
            when latest_versions.value is null then 'null value'
            when latest_versions.value <= -999 then 'sentinel value (<= -999)'
            when latest_versions.value < 0 then 'negative value'
            when latest_versions.value > limits.physical_max then 'above physical maximum'
            when latest_versions.flagged then 'flagged by OpenAQ'
        end as rejection_reason
    from latest_versions
    left join limits
        on limits.parameter = latest_versions.parameter
        and limits.units = latest_versions.units

),

final as (

    select
        -- ids
        sensor_id,
        period_end,
        location_id,
        parameter_id,

        -- descriptions
        {{ reading_descriptions() }},

        -- values
        value,
        flagged,
        coverage_percent,
        latitude,
        longitude,
        rejection_reason,
        version_count,

        -- timestamps
        period_start,
        ingested_at,
        now() as _processed_at

    from classified

)

select * from final

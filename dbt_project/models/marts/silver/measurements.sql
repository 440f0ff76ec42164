-- depends_on: {{ ref('int_measurements__current') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        indexes=[
            {'columns': ['sensor_id', 'period_end'], 'unique': True},
            {'columns': ['location_id', 'parameter', 'period_end']},
        ],
        pre_hook="{{ delete_affected(['sensor_id', 'period_end'], changed_readings()) }}",
        post_hook="{{ advance_watermark(ref('int_measurements__current')) }}",
    )
}}

-- Valid readings, one row per (sensor_id, period_end), latest ingested version. Units are
-- kept as OpenAQ gives them: a µg/m³ and a ppb reading of the same gas stay apart.

with changed as not materialized (

    -- the current readings processed since this model's watermark (macros/incremental.sql)
    {{ changed_readings() }}

),

valid as (

    select
        -- ids
        sensor_id,
        location_id,
        parameter_id,

        -- descriptions
        {{ reading_descriptions() }},

        -- values
        value,
        coverage_percent,
        latitude,
        longitude,
        version_count,

        -- timestamps
        period_start,
        period_end,
        ingested_at,
        now() as rebuilt_at

    from changed
    where rejection_reason is null

)

select * from valid

-- depends_on: {{ ref('int_measurements__current') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        indexes=[{'columns': ['sensor_id', 'period_end'], 'unique': True}],
        pre_hook="{{ delete_affected(['sensor_id', 'period_end'], changed_readings()) }}",
        post_hook="{{ advance_watermark(ref('int_measurements__current')) }}",
    )
}}

-- Readings kept out of silver.measurements, with the reason: null value, sentinel (<= -999),
-- negative, above the physical maximum of the parameter and units, or flagged by OpenAQ.

with current_readings as not materialized (

    select * from {{ ref('int_measurements__current') }}

),

changed as (

    select * from current_readings
    where _processed_at > {{ watermark() }}

),

rejected as (

    select
        -- ids
        sensor_id,
        location_id,
        parameter_id,

        -- descriptions
        location_name,
        parameter,
        units,
        rejection_reason,

        -- values
        value,
        flagged,
        version_count,

        -- timestamps
        period_start,
        period_end,
        ingested_at,
        now() as rebuilt_at

    from changed
    where rejection_reason is not null

)

select * from rejected

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

with changed as not materialized (

    -- the current readings processed since this model's watermark (macros/incremental.sql)
    {{ changed_readings() }}

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

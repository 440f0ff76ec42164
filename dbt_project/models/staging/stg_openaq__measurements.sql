-- One row per raw record (every version of every reading), renamed and typed for the warehouse.
with source as not materialized (

    select * from {{ source('openaq', 'openaq_measurements') }}

),

renamed as (

    select
        -- ids
        location_id,
        sensor_id,
        parameter_id,
        kafka_topic,
        kafka_partition,
        kafka_offset,

        -- descriptions
        {{ reading_descriptions() }},
        ingest_mode,
        schema_version,

        -- values
        value,
        flagged,
        coverage_percent,
        latitude,
        longitude,

        -- timestamps
        period_start,
        period_end,
        ingested_at,
        kafka_timestamp,
        loaded_at

    from source

)

select * from renamed

{#- One row per location: the name and country of its newest reading (gold.latest). The
    dashboard's views join it to label a location's series. -#}
with

latest as (
    select * from {{ ref('latest') }}
),

newest_reading_per_location as (
    select distinct on (location_id)
        location_id,
        location_name,
        country_code
    from latest
    order by location_id, measured_at desc
)

select * from newest_reading_per_location

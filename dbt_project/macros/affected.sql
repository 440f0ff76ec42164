{#- The slices of each gold model touched by readings changed since its watermark. -#}

{% macro pm25_affected_windows() -%}
    select distinct changed.location_id, windows.window_start
    from ({{ changed_readings() }}) as changed
    cross join lateral {{ quarter_hours('changed.period_start', 'changed.period_end') }} as windows(window_start)
    where changed.parameter = 'pm25' and changed.units = 'µg/m³'
{%- endmacro %}

{#- Per location, the runs of consecutive affected windows, each as a half-open range (gaps
    and islands: consecutive windows share window_start - rank * 15 minutes). pm25_15min
    recomputes and its pre-hook deletes whole ranges, so no join with the affected set
    (quadratic when PostgreSQL misestimates it) is needed; a late reading and today's make two
    small ranges, not one spanning the days between. -#}
{% macro pm25_affected_ranges() -%}
    select
        islands.location_id,
        min(islands.window_start) as first_window_start,
        max(islands.window_start) + interval '15 minutes' as end_window_start
    from (
        select
            windows.location_id,
            windows.window_start,
            windows.window_start - interval '15 minutes' * dense_rank() over (
                partition by windows.location_id order by windows.window_start
            ) as island
        from ({{ pm25_affected_windows() }}) as windows
    ) as islands
    group by islands.location_id, islands.island
{%- endmacro %}

{% macro daily_affected_days() -%}
    select distinct
        changed.location_id,
        changed.parameter,
        changed.units,
        changed.timezone,
        ({{ local_hour('changed.period_end', 'changed.timezone') }})::date as local_date
    from ({{ changed_readings() }}) as changed
{%- endmacro %}

{#- Per location, parameter and units, the runs of consecutive affected local days, each as
    a half-open range with its UTC bounds (computed on this side, so that the (location_id,
    parameter, period_end) index narrows the scan to the range). daily_avg recomputes and its
    pre-hook deletes whole ranges, as pm25_15min does with its windows. dense_rank, not
    row_number: a day listed under two timezones stays in one range. -#}
{% macro daily_affected_ranges() -%}
    select
        islands.location_id,
        islands.parameter,
        islands.units,
        min(islands.local_date) as first_local_date,
        (max(islands.local_date) + 1)::date as end_local_date,
        min(islands.local_date::timestamp at time zone islands.timezone) as first_instant,
        max((islands.local_date + 1)::timestamp at time zone islands.timezone) as last_instant
    from (
        select
            days.*,
            days.local_date - (dense_rank() over (
                partition by days.location_id, days.parameter, days.units order by days.local_date
            ))::integer as island
        from ({{ daily_affected_days() }}) as days
    ) as islands
    group by islands.location_id, islands.parameter, islands.units, islands.island
{%- endmacro %}

{#- A daily mean enters the trailing windows of its own day and the 29 days after it. -#}
{% macro exceedance_affected_days() -%}
    select distinct days.location_id, days.parameter, (days.local_date + offsets.days)::date as local_date
    from ({{ daily_affected_days() }}) as days
    cross join generate_series(0, 29) as offsets(days)
    where days.parameter in ('pm25', 'pm10') and days.units = 'µg/m³'
{%- endmacro %}

{% macro latest_affected() -%}
    select distinct changed.location_id, changed.parameter
    from ({{ changed_readings() }}) as changed
{%- endmacro %}

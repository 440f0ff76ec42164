{#- The slices of each gold model touched by readings changed since its watermark. -#}

{% macro pm25_affected_windows() -%}
    select distinct changed.location_id, windows.window_start
    from ({{ changed_readings() }}) as changed
    cross join lateral {{ quarter_hours('changed.period_start', 'changed.period_end') }} as windows(window_start)
    where changed.parameter = 'pm25' and changed.units = 'µg/m³'
{%- endmacro %}

{#- Per location, the half-open range of quarter-hours that holds all its affected windows.
    pm25_15min recomputes (and its pre-hook deletes) every window of the range: a window in
    the range that was not affected comes out unchanged, and no join with the affected set
    (quadratic when PostgreSQL misestimates it) is needed. -#}
{% macro pm25_affected_ranges() -%}
    select
        windows.location_id,
        min(windows.window_start) as first_window_start,
        max(windows.window_start) + interval '15 minutes' as end_window_start
    from ({{ pm25_affected_windows() }}) as windows
    group by windows.location_id
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

{#- Per location, parameter and units, the half-open range of local days that holds all the
    affected days, with its UTC bounds (computed on this side, so that the (location_id,
    parameter, period_end) index narrows the scan to the range). daily_avg recomputes (and its
    pre-hook deletes) every day of the range, as pm25_15min does with its windows. -#}
{% macro daily_affected_ranges() -%}
    select
        days.location_id,
        days.parameter,
        days.units,
        min(days.local_date) as first_local_date,
        (max(days.local_date) + 1)::date as end_local_date,
        min(days.local_date::timestamp at time zone days.timezone) as first_instant,
        max((days.local_date + 1)::timestamp at time zone days.timezone) as last_instant
    from ({{ daily_affected_days() }}) as days
    group by days.location_id, days.parameter, days.units
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

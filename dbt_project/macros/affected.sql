{#- The slices of each gold model touched by readings changed since its watermark. -#}

{% macro pm25_affected_windows() -%}
    select distinct changed.location_id, windows.window_start
    from ({{ changed_readings() }}) as changed
    cross join lateral {{ quarter_hours('changed.period_start', 'changed.period_end') }} as windows(window_start)
    where changed.parameter = 'pm25' and changed.units = 'µg/m³'
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

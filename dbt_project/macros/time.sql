{#- Time helpers shared by the gold models; all independent of the session's TimeZone. -#}

{#- The UTC quarter-hours whose window [start, start + 15 min) overlaps the period
    (period_start, period_end]: an hourly reading fills four, a 30-minute one two. -#}
{% macro quarter_hours(period_start, period_end) -%}
    generate_series(
        date_bin('15 minutes', {{ period_start }}, timestamptz '2000-01-01 00:00:00+00'),
        {{ period_end }} - interval '1 microsecond',
        interval '15 minutes'
    )
{%- endmacro %}

{#- The local wall-clock hour a reading belongs to: the hour holding its period's last instant. -#}
{% macro local_hour(period_end, timezone) -%}
    date_trunc('hour', ({{ period_end }} - interval '1 microsecond') at time zone {{ timezone }})
{%- endmacro %}

{#- The UTC hour a reading belongs to (NowCast hours), as a timestamp without time zone. -#}
{% macro utc_hour(period_end) -%}
    date_trunc('hour', ({{ period_end }} - interval '1 microsecond') at time zone 'UTC')
{%- endmacro %}

{#- "Now" for ages and staleness: the as_of var when set (tests), else the build time. -#}
{% macro as_of() -%}
    {%- if var('as_of') -%} '{{ var("as_of") }}'::timestamptz {%- else -%} now() {%- endif -%}
{%- endmacro %}

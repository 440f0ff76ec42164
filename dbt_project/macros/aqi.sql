{#-
  US AQI (EPA, 2024 PM2.5 revision). The concentration is first truncated (PM2.5 to one
  decimal, PM10 to an integer: seeds/aqi_breakpoints.csv, truncate_decimals), then
      I = (I_hi - I_lo) / (C_hi - C_lo) * (C - C_lo) + I_lo
  rounded to the nearest integer. Arithmetic is in numeric so that 9.0 and 35.4 hit their
  breakpoints exactly. Above the top breakpoint the index is capped at 500 (Hazardous).
-#}

{% macro aqi_subindex(concentration, pollutant, units) -%}
    (
        select case
            when trunc(({{ concentration }})::numeric, b.truncate_decimals) > b.concentration_hi
                then 500
            else round(
                (b.aqi_hi - b.aqi_lo)::numeric / (b.concentration_hi - b.concentration_lo)
                * (trunc(({{ concentration }})::numeric, b.truncate_decimals) - b.concentration_lo)
                + b.aqi_lo
            )::integer
        end
        from {{ ref('aqi_breakpoints') }} as b
        where b.pollutant = {{ pollutant }}
          and b.units = {{ units }}
          and ({{ concentration }}) >= 0
          and (
              trunc(({{ concentration }})::numeric, b.truncate_decimals) between b.concentration_lo and b.concentration_hi
              or (b.aqi_hi = 500 and trunc(({{ concentration }})::numeric, b.truncate_decimals) > b.concentration_hi)
          )
    )
{%- endmacro %}

{% macro aqi_category(aqi) -%}
    case
        when {{ aqi }} is null then null
        when {{ aqi }} <= 50 then 'Good'
        when {{ aqi }} <= 100 then 'Moderate'
        when {{ aqi }} <= 150 then 'Unhealthy for Sensitive Groups'
        when {{ aqi }} <= 200 then 'Unhealthy'
        when {{ aqi }} <= 300 then 'Very Unhealthy'
        else 'Hazardous'
    end
{%- endmacro %}

{#-
  NowCast (EPA) for PM from hourly means c1 (newest) .. c12, given as columns h1..h12 (null
  when the hour has no data): w = max(1 - (max - min) / max, 0.5) over the available hours,
  NowCast = sum(w^(i-1) * c_i) / sum(w^(i-1)). Valid only when at least 2 of the 3 newest
  hours exist; null otherwise.
-#}
{% macro nowcast(prefix='h') -%}
    case
        when ({% for i in range(1, 4) %}({{ prefix }}{{ i }} is not null)::int{% if not loop.last %} + {% endif %}{% endfor %}) < 2
            then null
        else (
            select sum(power(w, i - 1) * c) / sum(power(w, i - 1))
            from (
                select greatest(
                    case when max(c) over () > 0
                         then 1 - (max(c) over () - min(c) over ()) / max(c) over ()
                         else 1 end,
                    0.5
                ) as w, i, c
                from (values {% for i in range(1, 13) %}({{ i }}, {{ prefix }}{{ i }}::numeric){% if not loop.last %}, {% endif %}{% endfor %}) as hours(i, c)
                where c is not null
            ) as weighted
        )
    end
{%- endmacro %}

{#- Column lists that several models carry through unchanged, written once. -#}

{#- What describes a reading besides its value (where, what, from whom): renamed in staging,
    kept by the current version of each reading and by silver.measurements. -#}
{% macro reading_descriptions() -%}
    location_name,
        parameter,
        units,
        timezone,
        country_code,
        provider,
        is_mobile,
        is_monitor
{%- endmacro %}

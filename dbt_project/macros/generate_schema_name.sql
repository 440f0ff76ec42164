{#- Relations land in exactly the schema a folder names (silver, gold, ...), not in
    "<target schema>_<name>" as dbt does by default: the dashboards, the quality checks and
    the docs refer to silver.measurements and gold.daily_avg by those names. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}

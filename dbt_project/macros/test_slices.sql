{#-
  Data tests proportional to the new data. The data tests of the incremental models
  (intermediate, silver, gold) read only the rows of the model's latest run: dbt_project.yml
  gives them the `where` config "__rows_of_this_run__(<column>)", where <column> is the
  model's run stamp (_processed_at in int_measurements__current, rebuilt_at in silver and
  gold). With --vars '{full_tests: true}' (the nightly full build) they read whole tables.
  Tests of seeds, the source and the staging view are always whole.

  "The latest run" is the newest stamp in the table, not dbt's run_started_at: every row a
  model run writes carries that run's transaction time, and Airflow (Cosmos, after_each)
  tests a model in another dbt invocation than the one that built it, started later. A run
  that wrote nothing leaves the previous run's rows as the slice, which are tested again.
  A sliced uniqueness test sees duplicates within the slice only; the unique indexes and
  primary keys hold the rest.

  dbt renders a yml `where` without the project's macros (only var, env_var), so the marker
  is replaced here, in the macro that wraps a tested relation in its `where` (dbt's
  documented way to template `where`). Any other `where` passes through as dbt does it.
-#}

{% macro default__get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- set marker = '__rows_of_this_run__(' -%}
    {%- if where and where.startswith(marker) and where.endswith(')') -%}
        {%- do return(rows_of_this_run(relation, where[marker | length:-1] | trim)) -%}
    {%- elif where -%}
        {%- do return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') dbt_subquery') -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}

{#- The rows of `relation` stamped by its latest run (`stamp_column` at its maximum), or the
    whole relation when var full_tests is true. -#}
{% macro rows_of_this_run(relation, stamp_column) -%}
    {%- if full_tests() -%}
        {%- do return(relation) -%}
    {%- endif -%}
    {%- set sliced -%}
        (select * from {{ relation }}
         where {{ stamp_column }} >= (select max({{ stamp_column }}) from {{ relation }})) dbt_subquery
    {%- endset -%}
    {%- do return(sliced) -%}
{%- endmacro %}

{#- var full_tests, as given on the command line (true, "true", 1 ...). -#}
{% macro full_tests() -%}
    {%- set value = var('full_tests', false) -%}
    {%- do return(value in [true, 1] or (value is string and value | lower in ['true', '1', 'yes'])) -%}
{%- endmacro %}

{#-
  Incremental models here follow one pattern, so that late and corrected data fix every row
  they affect while a run costs what the new data costs:

  1. int_measurements__current keeps, per (sensor_id, period_end), the winning version of a
     reading and stamps every row it (re)writes with _processed_at = the run's time.
  2. Each downstream model remembers, in dbt_meta.watermarks, the latest _processed_at it has
     consumed. Its pre-hook deletes the slices (keys, windows, days) touched by readings
     processed since then, its SQL recomputes those slices from the current data, and dbt
     appends them; its post-hook moves the watermark. A slice whose readings all became
     invalid is deleted and not re-inserted. pm25_15min and daily_avg take, per series, the
     runs of consecutive touched windows/days as ranges (macros/affected.sql): matching the
     touched set instead is a join PostgreSQL misestimates into nested loops that grow with
     the square of the new data.
  3. Lookups into history are LATERAL subqueries with OFFSET 0: one index scan per key,
     series or pair, whatever PostgreSQL estimates (it estimates "_processed_at > watermark"
     at one row: its statistics only know the stamps of earlier runs).
-#}

{% macro create_watermark_table() %}
    create schema if not exists dbt_meta;
    create table if not exists dbt_meta.watermarks (
        model_name     text primary key,
        processed_upto timestamptz not null
    );
{% endmacro %}

{#- A stored watermark as a literal. It is read when the model is compiled (the pre-hook,
    the model and the post-hook of one run see the same value) and inlined as a constant,
    so that PostgreSQL estimates "> watermark" from its statistics and uses the indexes;
    a subquery there made it plan for a third of the table. -#}
{% macro stored_watermark(model_name) -%}
    {%- set value = none -%}
    {%- if execute -%}
        {%- set exists = run_query("select to_regclass('dbt_meta.watermarks') is not null") -%}
        {%- if exists.rows[0][0] -%}
            {%- set found = run_query(
                "select processed_upto from dbt_meta.watermarks where model_name = '" ~ model_name ~ "'"
            ) -%}
            {%- if found.rows | length > 0 -%}{%- set value = found.rows[0][0] -%}{%- endif -%}
        {%- endif -%}
    {%- endif -%}
    {%- if value is none -%}
        '-infinity'::timestamptz
    {%- else -%}
        '{{ value.isoformat() }}'::timestamptz
    {%- endif -%}
{%- endmacro %}

{#- The _processed_at this model has consumed up to ('-infinity' on a full build). -#}
{% macro watermark() -%}
    {%- if is_incremental() -%}
        {{ stored_watermark(this.schema ~ '.' ~ this.identifier) }}
    {%- else -%}
        '-infinity'::timestamptz
    {%- endif -%}
{%- endmacro %}

{#- Post-hook: the model has now consumed everything its upstream processed. -#}
{% macro advance_watermark(upstream) -%}
    insert into dbt_meta.watermarks (model_name, processed_upto)
    select '{{ this.schema }}.{{ this.identifier }}',
           coalesce((select max(_processed_at) from {{ upstream }}), '-infinity'::timestamptz)
    on conflict (model_name) do update set processed_upto = excluded.processed_upto
{%- endmacro %}

{#- The readings (current version, valid or not) processed since this model's watermark. -#}
{% macro changed_readings() -%}
    select * from {{ ref('int_measurements__current') }}
    where _processed_at > {{ watermark() }}
{%- endmacro %}

{#- Pre-hook: delete this model's rows whose key is in the `affected` query. -#}
{% macro delete_affected(key_columns, affected_sql) -%}
    {%- if is_incremental() -%}
        delete from {{ this }} as target
        using ({{ affected_sql }}) as affected
        where {% for column in key_columns -%}
            target.{{ column }} = affected.{{ column }}{% if not loop.last %} and {% endif %}
        {%- endfor %}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{#- Pre-hook: delete this model's rows inside the ranges of the `ranges` query: rows whose
    match_columns equal a range's and whose range_column lies in [range.first_column,
    range.end_column). -#}
{% macro delete_affected_ranges(match_columns, range_column, first_column, end_column, ranges_sql) -%}
    {%- if is_incremental() -%}
        delete from {{ this }} as target
        using ({{ ranges_sql }}) as ranges
        where {% for column in match_columns -%}
            target.{{ column }} = ranges.{{ column }} and {% endfor -%}
            target.{{ range_column }} >= ranges.{{ first_column }}
            and target.{{ range_column }} < ranges.{{ end_column }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{#- Pre-hook of int_measurements__current: statistics for raw.loaded_at if the raw table has
    none yet (a bulk load that autovacuum has not reached). Without them PostgreSQL takes
    "loaded_at > watermark" for a third of the table and scans all of raw on every run until
    autovacuum gets there (measured: 1 s a run at 10M rows). ANALYZE reads a fixed sample;
    a role that may not analyze raw gets a warning, not an error. -#}
{% macro ensure_raw_statistics() -%}
    {%- set raw = source('openaq', 'openaq_measurements') -%}
    do $$
    begin
        if not exists (
            select 1 from pg_stats
            where schemaname = '{{ raw.schema }}' and tablename = '{{ raw.identifier }}'
                and attname = 'loaded_at'
        ) then
            analyze {{ raw }} (loaded_at);
        end if;
    end
    $$
{%- endmacro %}

{#-
  The raw watermark of int_measurements__current. A raw row is stamped (loaded_at) when it is
  inserted but becomes visible when its transaction commits, so "loaded_at > the last value
  seen" could miss a row whose transaction was still open during the previous run. The pre-hook
  therefore records, before the model reads raw, the earliest start of any transaction open at
  that moment (or the moment itself): every row committed later has a loaded_at at or after it.
  The post-hook makes that the watermark of the next run, which the model reads with
  watermark() like every other model. Writers must use a role whose transactions this role
  can see in pg_stat_activity (the project uses one role throughout).
-#}
{% macro record_raw_watermark() -%}
    insert into dbt_meta.watermarks (model_name, processed_upto)
    select '{{ this.schema }}.{{ this.identifier }}#next',
           least(
               clock_timestamp(),
               coalesce((
                   select min(xact_start) from pg_stat_activity
                   where pid <> pg_backend_pid() and datname = current_database()
                     and xact_start is not null
               ), clock_timestamp())
           )
    on conflict (model_name) do update set processed_upto = excluded.processed_upto
{%- endmacro %}

{% macro advance_raw_watermark() -%}
    insert into dbt_meta.watermarks (model_name, processed_upto)
    select '{{ this.schema }}.{{ this.identifier }}', processed_upto
    from dbt_meta.watermarks
    where model_name = '{{ this.schema }}.{{ this.identifier }}#next'
    on conflict (model_name) do update set processed_upto = excluded.processed_upto
{%- endmacro %}

{#- on-run-end: ANALYZE the tables a run created from scratch (first build or
    --full-refresh; their adapter message is "SELECT n", an incremental one "INSERT 0 n").
    A freshly created table has no statistics until autovacuum gets to it, and without them
    the next incremental run plans for a third of the table instead of using the indexes. -#}
{% macro analyze_rebuilt_tables(results) -%}
    {%- if execute -%}
        {%- for result in results -%}
            {%- set message = (result.adapter_response or {}).get('_message', '') -%}
            {%- if result.node.resource_type == 'model' and result.status == 'success'
                  and result.node.config.materialized == 'incremental'
                  and message.startswith('SELECT') -%}
                {%- do run_query('analyze ' ~ result.node.relation_name) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}

{#- Post-hook of the silver and gold models: an index on rebuilt_at, which the exports, the
    gold gate and the sliced data tests (macros/test_slices.sql) filter on. Created here, not
    by the `indexes` config, because dbt creates those only when it builds the table: an
    existing warehouse gains the column (on_schema_change='append_new_columns') and, through
    this hook, its index on the next incremental run. -#}
{% macro ensure_index(column) -%}
    do $$
    begin
        if not exists (
            select 1
            from pg_index as i
            inner join pg_attribute as a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
            where i.indrelid = '{{ this }}'::regclass and i.indnkeyatts = 1
                and a.attname = '{{ column }}'
        ) then
            create index on {{ this }} ({{ column }});
        end if;
    end
    $$
{%- endmacro %}

{#- Post-hook of the silver and gold models: fresh statistics after every run. After an
    incremental run, those of the run stamp: the rows just written carry a rebuilt_at above
    the column's histogram, so without them PostgreSQL estimates "rebuilt_at >= this run" at a
    handful of rows and plans nested loops for the sliced tests, the gold gate's queries and
    the exports: measured, the gate's uniqueness query on a world hour's 112,000 rebuilt
    pm25_15min rows ran for minutes instead of a second. ANALYZE of one column reads a fixed
    sample (30,000 rows) and sees this transaction's rows. After a first build or a full
    refresh, the whole table: a model with an enforced contract is built by "create table"
    then "insert", so analyze_rebuilt_tables (which goes by the "SELECT n" message of a
    create-table-as) does not see it. -#}
{% macro analyze_stamp(column) -%}
    {%- if is_incremental() -%}
        analyze {{ this }} ({{ column }})
    {%- else -%}
        analyze {{ this }}
    {%- endif -%}
{%- endmacro %}

-- Where the incremental CSV exports resume (aqi/exports.py): per partitioned gold table, the
-- next `aqi export` rewrites the days having a row rebuilt (gold.<table>.rebuilt_at) at or
-- after rebuilt_from. A row is stamped when dbt writes it but seen when its transaction
-- commits, so the mark is the earliest start of any transaction open when the export began
-- (or that moment), as for raw.check_watermarks: no row committed later falls before it.
create table if not exists raw.export_marks (
    table_name   text        primary key,
    -- the folder the marked files are in (a mark for another folder means: export all days)
    directory    text        not null,
    -- the next run exports the days with a row rebuilt at or after this
    rebuilt_from timestamptz not null,
    -- the files' header (another one means: export all days, so that every file has it)
    header       text        not null,
    exported_at  timestamptz not null default now()
);

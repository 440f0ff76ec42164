-- Where each quality gate resumes: the raw gate judges the rows loaded since it last passed
-- (expectations/runner.py), so its cost follows the new data and a row it once let past
-- cannot fail every later run. A row is stamped (loaded_at) when inserted but seen when its
-- transaction commits: the mark is the earliest start of any transaction open when the
-- passing run began (or that moment), so no row committed later falls before it.
create table if not exists raw.check_watermarks (
    suite            text        primary key,
    -- the next run judges the rows loaded at or after this
    next_loaded_from timestamptz not null,
    -- the first loaded_at the passing run judged (null: the whole table)
    judged_from      timestamptz,
    passed_at        timestamptz not null default now()
);

"""Superset's security manager with the answers of its permission checks kept in memory while
the roles' permissions are unchanged (SUPERSET_CONFIG_PATH's CUSTOM_SECURITY_MANAGER).

Why: a chart's data request answered from the results cache still asks the metadata database,
through Flask-AppBuilder, whether the public role may call it, then whether the user's roles
may, then whether they may read all databases, all datasources, the dataset: five to seven ORM
queries, a quarter of the request's CPU (docs/benchmarks.md, "Dashboards, cold and warm").
The answers change only when a role's permissions change, which is rare.

How the answers stay right, across gunicorn workers and every way of changing a role (the
admin UI, the API, ``superset init``, provision.py, plain SQL):

- :func:`install` (run by provision.py, before gunicorn starts) adds statement-level triggers to
  the five tables the checks read (roles, permissions, view menus, their pairs and the roles'
  pairs): any insert, update, delete or truncate adds one to the single row of
  ``aq_security_version``, in the writer's own transaction;
- a request reads that number once, on its first check (one cheap query instead of the five to
  seven), and answers from a worker's memory only what was asked under the same number; a new
  number empties the worker's memory;
- a request that itself changes a role, permission or view menu (the session flushes one)
  stops using the memory for the rest of the request, and empties it;
- the user's roles are read on every request as before (the answers are kept per role id), so
  giving a user another role takes effect at once;
- outside a request (CLI commands, provision.py's own checks before :func:`install`), or when
  the table is not there (a metadata database ``install`` did not run on), every check asks the
  database as Superset does.

It imports Superset, so it is loaded only by Superset's interpreter (superset_config.py,
provision.py); the project's unit tests read its constants without importing it.

Public surface: :data:`VERSION_TABLE`, :data:`WATCHED_TABLES`, :func:`install`,
:func:`security_manager_class`.
"""

from __future__ import annotations

#: the one-row table whose number changes with every change of a role's permissions
VERSION_TABLE = "aq_security_version"
#: what Flask-AppBuilder's permission checks read (roles, permissions, view menus, their pairs)
WATCHED_TABLES = (
    "ab_role",
    "ab_permission",
    "ab_view_menu",
    "ab_permission_view",
    "ab_permission_view_role",
)
_FUNCTION = "aq_bump_security_version"
_TRIGGER = "aq_security_version_bump"
_ANSWERS = "_aq_permission_answers"  # the request's answers, on flask.g
_UNCACHED = object()  # flask.g marker: this request asks the database for every check


def _install_sql() -> list[str]:
    """The statements :func:`install` runs (idempotent; PostgreSQL)."""
    statements = [
        (
            f"create table if not exists {VERSION_TABLE} ("
            "id integer primary key check (id = 1), version bigint not null)"
        ),
        f"insert into {VERSION_TABLE} (id, version) values (1, 0) on conflict (id) do nothing",
        (
            f"create or replace function {_FUNCTION}() returns trigger language plpgsql as $$ "
            f"begin update {VERSION_TABLE} set version = version + 1 where id = 1; "
            "return null; end $$"
        ),
    ]
    for table in WATCHED_TABLES:
        statements.append(
            "do $$ begin if not exists (select 1 from pg_trigger where tgname = "
            f"'{_TRIGGER}' and tgrelid = '{table}'::regclass) then "
            f"create trigger {_TRIGGER} after insert or update or delete or truncate on {table} "
            f"for each statement execute function {_FUNCTION}(); end if; end $$"
        )
    return statements


def install(session) -> bool:
    """Create the version table and the triggers in the metadata database, then commit.

    Returns False (and does nothing) when the metadata database is not PostgreSQL: the
    security manager then asks the database for every check, as Superset does.
    """
    from sqlalchemy import text

    if session.get_bind().dialect.name != "postgresql":
        return False
    for statement in _install_sql():
        session.execute(text(statement))
    session.commit()
    return True


def security_manager_class():
    """The security manager class (imports Superset: call it from Superset's interpreter)."""
    from flask import g, has_request_context
    from sqlalchemy import event, text
    from sqlalchemy.orm import Session
    from superset.security.manager import SupersetSecurityManager

    class RememberingSecurityManager(SupersetSecurityManager):
        """Superset's security manager; permission answers kept while the roles are unchanged."""

        def __init__(self, appbuilder) -> None:
            super().__init__(appbuilder)
            self._memory: tuple[int | None, dict] = (None, {})
            self._installed = False
            watched = (
                self.role_model,
                self.permission_model,
                self.viewmenu_model,
                self.permissionview_model,
            )

            @event.listens_for(Session, "after_flush")
            def _forget_on_change(session, _context) -> None:
                changed = session.new | session.dirty | session.deleted
                if any(isinstance(obj, watched) for obj in changed):
                    self._memory = (None, {})
                    if has_request_context():
                        setattr(g, _ANSWERS, _UNCACHED)

        def is_item_public(self, permission_name: str, view_name: str) -> bool:
            return self._remembered(
                ("public", permission_name, view_name),
                lambda: super(RememberingSecurityManager, self).is_item_public(
                    permission_name, view_name
                ),
            )

        def exist_permission_on_roles(
            self, view_name: str, permission_name: str, role_ids: list[int]
        ) -> bool:
            return self._remembered(
                ("roles", view_name, permission_name, tuple(sorted(role_ids))),
                lambda: super(RememberingSecurityManager, self).exist_permission_on_roles(
                    view_name, permission_name, role_ids
                ),
            )

        def _remembered(self, key: tuple, ask):
            answers = self._answers()
            if answers is None:
                return ask()
            if key not in answers:
                answers[key] = ask()
            return answers[key]

        def _answers(self) -> dict | None:
            """This request's answers: the worker's memory if the roles are unchanged."""
            if not has_request_context():
                return None
            answers = g.get(_ANSWERS)
            if answers is _UNCACHED:
                return None
            if answers is not None:
                return answers
            version = self._version()
            if version is None:
                setattr(g, _ANSWERS, _UNCACHED)
                return None
            memory = self._memory
            if memory[0] != version:
                memory = (version, {})
                self._memory = memory
            setattr(g, _ANSWERS, memory[1])
            return memory[1]

        def _version(self) -> int | None:
            """The roles' version number; None when :func:`install` has not run here."""
            session = self.session
            if session.get_bind().dialect.name != "postgresql":
                return None
            if not self._installed:
                found = session.execute(text(f"select to_regclass('{VERSION_TABLE}')")).scalar()
                if found is None:
                    return None
                self._installed = True
            return session.execute(text(f"select version from {VERSION_TABLE}")).scalar()

    return RememberingSecurityManager

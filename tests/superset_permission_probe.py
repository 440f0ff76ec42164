"""Counts the metadata queries of Superset's permission checks, request by request.

Run by tests/integration/test_dashboards.py with Superset's own interpreter
(superset/.venv/bin/python) and the environment `aqi dashboards up` gives Superset
(aqi.services.superset.superset_env), so it loads superset/superset_config.py and its security
manager (superset/aq_security.py) exactly as gunicorn does. It prints one JSON line:

    {"manager": class name,
     "requests": [{"answers": [...], "statements": n}, ...],   # one per simulated request
     "reference": [...]}                                       # Superset's own answers

The requests, each one Flask request context as the analyst: (1) the first, (2) the same
checks again, (3) after the roles' version number changed through plain SQL, (4) one that
changes a role itself (a flush of an ab_role row), asking the checks after the change.
"""

from __future__ import annotations

import json


def main() -> None:
    from flask import g
    from sqlalchemy import event, text
    from superset.app import create_app

    app = create_app()
    # (each request below gets its own application context, hence its own flask.g, as
    # under gunicorn; this one only looks up what the checks are about)
    with app.app_context():
        from superset.connectors.sqla.models import SqlaTable
        from superset.security.manager import SupersetSecurityManager

        from superset import db

        sm = app.appbuilder.sm
        analyst = sm.find_user("analyst")
        role_ids = [role.id for role in analyst.roles]
        role_name = analyst.roles[0].name
        dataset = db.session.query(SqlaTable).order_by(SqlaTable.id).first()
        checks = [
            ("can_read", "Chart"),
            ("all_datasource_access", "all_datasource_access"),
            ("datasource_access", dataset.perm),
            ("can_sqllab", "Superset"),
        ]
        engine = db.engine
    statements = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(1))

    def request(change=None, manager=None) -> dict:
        manager = manager or type(sm)  # (its functions, called with sm)
        with app.test_request_context():
            g.user = sm.find_user("analyst")
            if change is not None:
                change()
            before = len(statements)
            answers = [manager.is_item_public(sm, p, v) for p, v in checks]
            answers += [manager.exist_permission_on_roles(sm, v, p, role_ids) for p, v in checks]
            return {"answers": answers, "statements": len(statements) - before}

    def bump_with_sql() -> None:
        db.session.execute(text("update aq_security_version set version = version + 1"))
        db.session.commit()

    def change_a_role() -> None:
        role = sm.find_role(role_name)
        role.name = f"{role_name} (renamed)"  # a watched row flushed by this request
        db.session.flush()
        db.session.rollback()  # (never committed)

    requests = [request(), request(), request(bump_with_sql), request(change_a_role)]
    reference = request(manager=SupersetSecurityManager)["answers"]
    print(json.dumps({"manager": type(sm).__name__, "requests": requests,
                      "reference": reference}))  # fmt: skip


if __name__ == "__main__":
    main()

"""Provision Superset from the bundle in superset/bundle: admin user, database, datasets, charts,
dashboards. Runs in Superset's own environment (superset/.venv/bin/python), started by
`aqi dashboards up` (aqi/services/superset.py) with SUPERSET_CONFIG_PATH and the rest of
Superset's environment set; it imports nothing from the main environment.

Secrets arrive as one JSON document on stdin, never on the command line:

    {"bundle": "/path/to/superset/bundle",
     "admin": {"username": "admin", "password": "..."},
     "analyst": {"username": "analyst", "password": "...", "role": "Analyst"},
     "warehouse": {"uri": "postgresql+psycopg2://aq_superset:XXXXXXXXXX@host:port/aq",
                   "password": "..."}}

What it does, every time (idempotent):

0. installs the triggers that number the changes of roles and permissions, so that gunicorn's
   workers know when the permission answers they keep in memory are out of date
   (aq_security.py);
1. creates the admin user, or resets its password when it differs from the given one;
2. imports the bundle with Superset's ImportAssetsCommand (what `POST /api/v1/assets/import/`
   runs): every database, dataset, chart and dashboard is created or overwritten by its UUID,
   so a chart changed in the bundle is changed in Superset (importing a dashboard alone would
   keep existing charts as they are). The database's URI in the bundle carries Superset's
   password mask; the real host/port/database come from ``warehouse.uri`` and the password from
   ``warehouse.password``, passed to the import like the import API's ``passwords`` field;
3. deletes charts, datasets and dashboards that an earlier version of the bundle created
   (marked ``is_managed_externally``, on the bundle's database) and that it no longer has;
4. points the native filters at every chart of their dashboard (``chartsInScope``: chart ids
   are only known after the import);
5. gives the analyst user (created, or its password reset) exactly one role: Superset's
   Gamma without the permissions that change content (write, delete, import on charts,
   dashboards, datasets, databases...), plus read access to the bundle's datasets and no
   other. Gamma has no SQL Lab; the datasets read the gold schema only. So an analyst views,
   filters and explores the dashboard's data, and cannot save a chart or run SQL.

The last line of stdout is a JSON summary: {"dashboards": {slug: id}, "charts": {uuid: id},
"datasets": {uuid: id}, "databases": {uuid: id}, "deleted": [...]}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

YAML_SUFFIXES = (".yaml", ".yml")
#: what Gamma may do that the analyst may not: change content (permission on view menu)
CHANGES = {"can_write", "can_delete", "muldelete", "can_add", "can_edit", "can_import",
           "can_tag", "can_duplicate"}  # fmt: skip
CONTENT_VIEWS = {"Chart", "Dashboard", "Dataset", "Database", "CssTemplate", "Annotation",
                 "AnnotationLayerRestApi", "Tag", "SavedQuery", "Query", "ReportSchedule",
                 "ImportExportRestApi", "Row Level Security", "Theme"}  # fmt: skip
#: Superset's mask for a password in an exported URI (superset.constants.PASSWORD_MASK)
PASSWORD_MASK = "X" * 10


def read_bundle(root: Path) -> dict[str, str]:
    """The bundle's files as the import commands expect them: {"charts/x.yaml": text}."""
    contents = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in YAML_SUFFIXES:
            contents[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
    if "metadata.yaml" not in contents:
        raise SystemExit(f"provision: {root} has no metadata.yaml: not a Superset bundle")
    return contents


def bundle_uuids(contents: dict[str, str]) -> dict[str, set[str]]:
    """UUIDs per kind (databases, datasets, charts, dashboards) present in the bundle."""
    found: dict[str, set[str]] = {
        k: set() for k in ("databases", "datasets", "charts", "dashboards")
    }
    for name, text in contents.items():
        kind = name.split("/", 1)[0]
        if kind in found:
            found[kind].add(str(yaml.safe_load(text)["uuid"]))
    return found


def with_warehouse_uri(contents: dict[str, str], uri: str) -> dict[str, str]:
    """Each database file with ``uri`` (password masked) in place of the committed one."""
    from sqlalchemy.engine.url import make_url

    url = make_url(uri)
    if url.password not in (None, PASSWORD_MASK):
        url = url.set(password=PASSWORD_MASK)
    masked = url.render_as_string(hide_password=False)
    out = dict(contents)
    for name, text in contents.items():
        if name.startswith("databases/"):
            config = yaml.safe_load(text)
            config["sqlalchemy_uri"] = masked
            out[name] = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    return out


def ensure_admin(username: str, password: str) -> object:
    from superset import security_manager

    role = security_manager.find_role("Admin")
    if role is None:
        raise SystemExit("provision: role Admin is missing: run `superset init` first")
    return ensure_user(username, password, role, "admin")


def ensure_analyst(username: str, password: str, role_name: str, dataset_uuids: set[str]) -> None:
    """The view-and-explore user: one role, Gamma minus changes plus the bundle's datasets."""
    from superset.connectors.sqla.models import SqlaTable

    from superset import db, security_manager

    gamma = security_manager.find_role("Gamma")
    if gamma is None:
        raise SystemExit("provision: role Gamma is missing: run `superset init` first")
    permissions = [
        pvm for pvm in gamma.permissions
        if not (pvm.permission.name in CHANGES and pvm.view_menu.name in CONTENT_VIEWS)
    ]  # fmt: skip
    for table in db.session.query(SqlaTable).all():
        if str(table.uuid) in dataset_uuids:
            permissions.append(
                security_manager.add_permission_view_menu("datasource_access", table.get_perm())
            )
    role = security_manager.add_role(role_name)
    role.permissions = permissions
    ensure_user(username, password, role, "analyst")


def ensure_user(username: str, password: str, role: object, kind: str) -> object:
    """The user with exactly this role and the given password: created, or repaired."""
    from werkzeug.security import check_password_hash

    from superset import db, security_manager

    user = security_manager.find_user(username=username)
    if user is None:
        user = security_manager.add_user(
            username, "Air quality", kind, f"{username}@localhost.invalid", role,
            password=password,
        )  # fmt: skip
        if not user:
            raise SystemExit(f"provision: could not create the user {username}")
        print(f"provision: created the {kind} user {username}")
    else:
        user.roles = [role]
        if not check_password_hash(user.password, password):
            security_manager.reset_password(user.id, password)
            print(f"provision: reset the password of {username} to the generated one")
    db.session.commit()
    return security_manager.find_user(username=username)


def import_bundle(contents: dict[str, str], passwords: dict[str, str]) -> None:
    from superset.commands.exceptions import CommandInvalidError
    from superset.commands.importers.v1.assets import ImportAssetsCommand

    try:
        ImportAssetsCommand(contents, passwords=passwords).run()
    except CommandInvalidError as exc:
        raise SystemExit(f"provision: the bundle is invalid: {exc.normalized_messages()}") from None


def prune(wanted: dict[str, set[str]]) -> list[str]:
    """Delete what an earlier version of this bundle created and the bundle no longer has.

    Only objects marked ``is_managed_externally`` and tied to the bundle's databases are
    candidates: datasets on those databases, charts on those datasets, dashboards made only of
    such charts. Anything created in the UI, or by another bundle, is left alone.
    """
    from superset.connectors.sqla.models import SqlaTable
    from superset.models.core import Database
    from superset.models.dashboard import Dashboard
    from superset.models.slice import Slice

    from superset import db

    managed = {
        model: db.session.query(model).filter(model.is_managed_externally.is_(True)).all()
        for model in (SqlaTable, Slice, Dashboard)
    }
    database_ids = {
        d.id for d in db.session.query(Database).all() if str(d.uuid) in wanted["databases"]
    }
    dataset_ids = {d.id for d in db.session.query(SqlaTable).all() if d.database_id in database_ids}
    ours_charts = [
        c for c in managed[Slice]
        if c.datasource_type == "table" and c.datasource_id in dataset_ids
    ]  # fmt: skip
    ours_chart_ids = {c.id for c in ours_charts}
    doomed = [
        *(
            ("dashboard", d.dashboard_title, d)
            for d in managed[Dashboard]
            if str(d.uuid) not in wanted["dashboards"]
            and d.slices
            and all(c.id in ours_chart_ids for c in d.slices)
        ),
        *(("chart", c.slice_name, c) for c in ours_charts if str(c.uuid) not in wanted["charts"]),
        *(
            ("dataset", d.table_name, d)
            for d in managed[SqlaTable]
            if d.id in dataset_ids and str(d.uuid) not in wanted["datasets"]
        ),
    ]
    deleted = []
    for kind, name, obj in doomed:
        deleted.append(f"{kind} {name!r} ({obj.uuid})")
        db.session.delete(obj)
    db.session.commit()
    return deleted


def scope_native_filters(dashboard_uuids: set[str]) -> dict[str, int]:
    """Set chartsInScope of each native filter (all charts but the excluded); {slug: id}."""
    from superset.models.dashboard import Dashboard

    from superset import db

    ids = {}
    for dashboard in db.session.query(Dashboard).all():
        if str(dashboard.uuid) not in dashboard_uuids:
            continue
        ids[dashboard.slug or str(dashboard.uuid)] = dashboard.id
        metadata = json.loads(dashboard.json_metadata or "{}")
        charts = sorted(chart.id for chart in dashboard.slices)
        for native in metadata.get("native_filter_configuration", []):
            excluded = set(native.get("scope", {}).get("excluded", []))
            native["chartsInScope"] = [c for c in charts if c not in excluded]
        global_config = metadata.get("global_chart_configuration")
        if global_config is not None:
            excluded = set(global_config.get("scope", {}).get("excluded", []))
            global_config["chartsInScope"] = [c for c in charts if c not in excluded]
        dashboard.json_metadata = json.dumps(metadata)
    db.session.commit()
    return ids


def ids_by_uuid(model, uuids: set[str]) -> dict[str, int]:
    from superset import db

    return {
        str(obj.uuid): obj.id for obj in db.session.query(model).all() if str(obj.uuid) in uuids
    }


def main() -> None:
    request = json.load(sys.stdin)
    root = Path(request["bundle"])
    contents = with_warehouse_uri(read_bundle(root), request["warehouse"]["uri"])
    wanted = bundle_uuids(contents)
    passwords = {
        name: request["warehouse"]["password"] for name in contents if name.startswith("databases/")
    }

    from flask import g
    from superset.app import create_app

    app = create_app()
    with app.app_context(), app.test_request_context():
        import aq_security
        from superset.connectors.sqla.models import SqlaTable
        from superset.models.core import Database
        from superset.models.slice import Slice

        from superset import db

        # the triggers that tell gunicorn's workers a role changed (aq_security.py)
        aq_security.install(db.session)
        g.user = ensure_admin(request["admin"]["username"], request["admin"]["password"])
        import_bundle(contents, passwords)
        deleted = prune(wanted)
        dashboards = scope_native_filters(wanted["dashboards"])
        analyst = request["analyst"]
        ensure_analyst(analyst["username"], analyst["password"], analyst["role"],
                       wanted["datasets"])  # fmt: skip
        summary = {
            "dashboards": dashboards,
            "charts": ids_by_uuid(Slice, wanted["charts"]),
            "datasets": ids_by_uuid(SqlaTable, wanted["datasets"]),
            "databases": ids_by_uuid(Database, wanted["databases"]),
            "deleted": deleted,
        }
    for line in deleted:
        print(f"provision: deleted {line} (no longer in the bundle)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

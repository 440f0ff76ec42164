"""docker-compose.yml, the whole stack in containers, checked without a Docker engine.

Every check reads the real files (docker-compose.yml, the Dockerfiles it builds, the scripts
it mounts, .env.example, uv.lock) and the project's own list of variables
(:data:`aqi.config.ENV_VARS`); nothing here is a copy of what the compose file says. The
structure is validated against the Compose Specification JSON schema that the
``check-jsonschema`` package ships (Apache-2.0, dev dependency group).
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from aqi.config import ENV_VARS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE_ONLY_MARKER = "# --- docker compose only ---"
LOOPBACK = "127.0.0.1"

#: variable names the project owns: in a container that runs project code they must be
#: variables the project reads (aqi.config.ENV_VARS), or they are typos that nothing reads
PROJECT_VAR = re.compile(r"^(AQ_|OPENAQ_|KAFKA_BOOTSTRAP_SERVERS$)")
#: names that hold secrets (a *_FILE variable holds a path, not the secret)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|(^|_)KEY$")
#: compose interpolation: $$ (a literal $), ${NAME[op arg]} and $NAME
INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
)
#: a whole value that is one required interpolation: ${NAME:?message} or ${NAME?message}
REQUIRED_VALUE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?\?[^}]*\}")
URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/:@\s]*:(?P<password>[^@\s]*)@")

#: The issue's images: official repository -> accepted tags. Services that only pull an image
#: must use one of the first group; images built here must extend one of all of them.
PULLED_IMAGES = {
    "apache/kafka": r"(3\.9|4\.\d+)\.\d+",  # KRaft, single node, a pinned 3.9.x or 4.x
    "postgres": r"16(\.\d+)?",
}
BASE_IMAGES = {
    "apache/spark": r"4\.\d+\.\d+(-[\w.]+)?-python3(-[\w.]+)?",
    "apache/airflow": None,  # the Airflow of uv.lock, see airflow_tag()
    "apache/superset": r"6\.\d+\.\d+",
    "python": r"3\.11[\w.-]*",  # the project's Python (requires-python ==3.11)
}
#: every component the issue names must be in the stack
REQUIRED_COMPONENTS = {
    "apache/kafka",
    "postgres",
    "apache/spark",
    "apache/airflow",
    "apache/superset",
}


# --- reading the files -----------------------------------------------------------------------


@cache
def compose() -> dict:
    """docker-compose.yml as compose sees it before interpolation (YAML merge keys resolved)."""
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def services() -> dict[str, dict]:
    return compose()["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_text(service: dict) -> str:
    cmd = service.get("command") or ""
    return cmd if isinstance(cmd, str) else " ".join(map(str, cmd))


def strings(node: object) -> Iterator[str]:
    """Every string of a parsed YAML document (keys and values)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def interpolations(text: str) -> Iterator[tuple[str, str]]:
    """(variable, operator) of each interpolation in ``text``; ``$$`` is not one."""
    for match in INTERPOLATION.finditer(text):
        name = match.group("name") or match.group("plain")
        if name:
            yield name, match.group("op") or ""


def rendered(text: str) -> str:
    """``text`` as compose would pass it on, with a placeholder for each variable's value."""
    return re.sub(
        r"\$\$|\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*",
        lambda m: "$" if m.group(0) == "$$" else "placeholder",
        text,
    )


def env_example() -> dict[str, str]:
    """The assignments of .env.example, commented-out lines excluded."""
    pairs = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line.strip())
        if match:
            pairs[match.group(1)] = match.group(2).strip()
    return pairs


def dockerfile(service: dict) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        build = {"context": build}
    context = ROOT / build.get("context", ".")
    return context / build.get("dockerfile", "Dockerfile")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines, pending = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [(ln.split(None, 1)[0].upper(), (ln.split(None, 1) + [""])[1]) for ln in lines]


def final_base_image(path: Path) -> str:
    """The image the last stage of a Dockerfile starts from (following stage names)."""
    args, stages, base = {}, {}, ""
    for instruction, rest in dockerfile_instructions(path):
        if instruction == "ARG" and not stages and "=" in rest:
            name, value = rest.split("=", 1)
            args[name.strip()] = value.strip().strip('"')
        elif instruction == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            base = stages.get(image, image)
            if len(words) >= 3 and words[1].lower() == "as":
                stages[words[2]] = base
    return base


def split_image(image: str) -> tuple[str, str]:
    """'docker.io/library/postgres:16' -> ('postgres', '16'); a digest counts as the tag."""
    name, _, digest = image.partition("@")
    repo, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
    for prefix in ("docker.io/library/", "docker.io/", "library/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix) :]
            break
    return repo, tag or digest


def runs_project_code(service: dict) -> bool:
    """The service's image installs the project (its Dockerfile copies pyproject.toml + uv.lock)."""
    path = dockerfile(service)
    if path is None:
        return False
    copied = " ".join(rest for ins, rest in dockerfile_instructions(path) if ins in ("COPY", "ADD"))
    return "pyproject.toml" in copied and "uv.lock" in copied


def one_shot_services() -> set[str]:
    """Services others wait for to *finish* (init jobs)."""
    return {
        dep
        for svc in services().values()
        if isinstance(svc.get("depends_on"), dict)
        for dep, spec in svc["depends_on"].items()
        if (spec or {}).get("condition") == "service_completed_successfully"
    }


def services_with_image(repo: str) -> list[str]:
    """Names of the services whose image (pulled, or the base of the one built) is ``repo``."""
    found = []
    for name, svc in services().items():
        path = dockerfile(svc)
        image = final_base_image(path) if path else svc.get("image", "")
        if split_image(image)[0] == repo:
            found.append(name)
    return found


def airflow_tag() -> str:
    """Tag of the official Airflow image that matches the project: uv.lock's Airflow, Python 3.11."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    (version,) = [p["version"] for p in lock["package"] if p["name"] == "apache-airflow"]
    return re.escape(version) + r"(-python3\.11)"


# --- the checks ------------------------------------------------------------------------------


def compose_schema() -> dict:
    """The Compose Specification schema shipped by check-jsonschema (dev dependency group)."""
    try:
        vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        message = (
            "check-jsonschema (dev dependency group) is not installed: it ships the Compose "
            "Specification schema; run `uv sync`"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8"))


def test_compose_file_follows_the_compose_specification():
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)

    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(compose())
    ]
    assert errors == []

    # the schema really is applied: a misspelt key and a wrongly typed field are caught
    broken = copy.deepcopy(compose())
    service = next(iter(broken["services"].values()))
    service["helthcheck"] = {"test": ["CMD", "true"]}
    service["ports"] = LOOPBACK + ":1:1"
    assert len(list(validator.iter_errors(broken))) >= 2


def test_every_published_port_is_bound_to_loopback():
    problems = []
    for name, svc in services().items():
        if svc.get("network_mode") == "host":
            problems.append(f"{name}: network_mode host publishes every port")
        for port in svc.get("ports") or []:
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                parts = str(port).split("/", 1)[0].rsplit(":", 2)
                host_ip = parts[0] if len(parts) == 3 else None
            if host_ip != LOOPBACK:
                problems.append(f"{name}: {port!r} is not bound to {LOOPBACK}")
    assert problems == []
    assert any(svc.get("ports") for svc in services().values()), "nothing is published at all"


def test_project_code_reads_only_variables_the_project_knows():
    project_services = [n for n, s in services().items() if runs_project_code(s)]
    assert project_services, "no service builds an image that installs the project"
    unknown = []
    for name, svc in services().items():
        for var in environment(svc):
            # a project-owned name anywhere, or any project-looking name in project code
            owned = var.startswith(("AQ_", "OPENAQ_"))
            if (owned or (name in project_services and PROJECT_VAR.match(var))) and (
                var not in ENV_VARS
            ):
                unknown.append(f"{name}: {var}")
    assert unknown == [], f"not in aqi.config.ENV_VARS: {unknown}"


def test_project_services_run_the_pipeline_against_the_compose_services():
    commands = {name: command_text(svc) for name, svc in services().items()}
    for sub_command in ("aqi collect", "aqi stream"):
        runners = [n for n, c in commands.items() if c.startswith(sub_command)]
        assert runners, f"no service runs `{sub_command}`"
        assert all(runs_project_code(services()[n]) for n in runners)

    (kafka,) = services_with_image("apache/kafka")
    (postgres,) = services_with_image("postgres")
    advertised = environment(services()[kafka])["KAFKA_ADVERTISED_LISTENERS"]
    internal = {url.split("://", 1)[1] for url in advertised.split(",")}
    named_volumes = set(compose().get("volumes") or {})

    for name, svc in services().items():
        if not runs_project_code(svc):
            continue
        env = environment(svc)
        assert env.get("KAFKA_BOOTSTRAP_SERVERS") in internal, (
            f"{name}: KAFKA_BOOTSTRAP_SERVERS={env.get('KAFKA_BOOTSTRAP_SERVERS')!r} is not "
            f"one of the broker's advertised listeners {sorted(internal)}"
        )
        assert env["KAFKA_BOOTSTRAP_SERVERS"].split(":")[0] == kafka
        db = urlsplit(rendered(env.get("AQ_DATABASE_URL", "")))
        assert (db.scheme, db.hostname, db.port, db.path) == ("postgresql", postgres, 5432, "/aq")
        assert env.get("AQ_HOME") == "/opt/aq", f"{name}: AQ_HOME"
        mounted = [
            v for v in svc.get("volumes") or []
            if isinstance(v, dict) and v.get("target") == env["AQ_HOME"]
            or isinstance(v, str) and v.split(":")[1:2] == [env["AQ_HOME"]]
        ]  # fmt: skip
        assert mounted, f"{name}: AQ_HOME is not on a volume"
        source = mounted[0]["source"] if isinstance(mounted[0], dict) else mounted[0].split(":")[0]
        assert source in named_volumes, f"{name}: AQ_HOME is on {source!r}, not a named volume"

    # Spark and Airflow share AQ_HOME (Bronze Parquet, checkpoints, logs)
    homes = {
        n: [v["source"] if isinstance(v, dict) else v.split(":")[0] for v in s.get("volumes", [])]
        for n, s in services().items()
        if n in services_with_image("apache/spark") + services_with_image("apache/airflow")
    }
    shared = set.intersection(*(set(v) for v in homes.values())) & named_volumes
    assert shared, f"spark and airflow share no named volume: {homes}"


def test_every_interpolated_variable_is_documented_in_env_example():
    documented = set(env_example())
    used = {name for text in strings(compose()) for name, _ in interpolations(text)}
    assert used, "the compose file interpolates nothing: where do its secrets come from?"
    assert sorted(used - documented) == []


def test_no_secret_has_a_value_in_the_files():
    problems = []
    for text in strings(compose()):
        for name, op in interpolations(text):
            if SECRET_NAME.search(name) and not name.endswith("_FILE") and op not in ("?", ":?"):
                problems.append(f"${{{name}{op}...}} must be required: ${{{name}:?...}}")
        for match in URL_PASSWORD.finditer(text):
            if not REQUIRED_VALUE.fullmatch(match.group("password")):
                problems.append(f"literal password in URL {match.group(0)}...")
    for name, svc in services().items():
        for var, value in environment(svc).items():
            secret = SECRET_NAME.search(var) and not var.endswith("_FILE")
            if secret and REQUIRED_VALUE.sub("", value) != "":
                problems.append(f"{name}: {var} has a literal value")
    assert problems == []

    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    assert COMPOSE_ONLY_MARKER in lines, "no compose-only block in .env.example"
    compose_only = "\n".join(lines[lines.index(COMPOSE_ONLY_MARKER) :])
    misleading = re.findall(r"^((?:AQ_|OPENAQ_)\w*)=", compose_only, flags=re.MULTILINE)
    assert misleading == [], f"compose-only variables named like the project's: {misleading}"
    filled = [k for k, v in env_example().items() if SECRET_NAME.search(k) and v]
    assert filled == [], f".env.example must not ship secret values: {filled}"


def test_long_running_services_have_health_checks_and_dependents_wait_for_them():
    one_shot = one_shot_services()
    problems = []
    for name, svc in services().items():
        if name in one_shot:
            if str(svc.get("restart", "no")) != "no":
                problems.append(f"{name}: an init job must not restart")
            continue
        check = svc.get("healthcheck") or {}
        if check.get("disable") or not check.get("test") or check["test"][:1] == ["NONE"]:
            problems.append(f"{name}: no health check")
    for name, svc in services().items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            problems.append(f"{name}: depends_on without a condition {deps}")
            continue
        for dep, spec in deps.items():
            expected = "service_completed_successfully" if dep in one_shot else "service_healthy"
            if (spec or {}).get("condition") != expected:
                problems.append(f"{name} -> {dep}: condition should be {expected}")
    assert problems == []
    assert one_shot, "no init job: who migrates the Airflow and Superset metadata?"


def test_images_are_the_official_ones_pinned():
    accepted = {**PULLED_IMAGES, **BASE_IMAGES, "apache/airflow": airflow_tag()}
    used, problems = set(), []
    for name, svc in services().items():
        path = dockerfile(svc)
        if path is not None:
            assert path.is_file(), f"{name}: {path} does not exist"
            image, allowed = final_base_image(path), accepted
        else:
            image, allowed = svc.get("image", ""), PULLED_IMAGES
        repo, tag = split_image(image)
        used.add(repo)
        if repo not in allowed:
            problems.append(f"{name}: {image!r} is not an official image of the stack")
        elif not re.fullmatch(allowed[repo], tag):
            problems.append(f"{name}: {image!r} tag is not a pinned {allowed[repo]}")
    assert problems == []
    assert REQUIRED_COMPONENTS <= used, f"missing from the stack: {REQUIRED_COMPONENTS - used}"


def test_airflow_runs_local_executor_with_metadata_in_postgres():
    airflow = {n: services()[n] for n in services_with_image("apache/airflow")}
    commands = {command_text(s) for s in airflow.values()}
    for needed in ("airflow api-server", "airflow scheduler", "airflow dag-processor"):
        # the api-server may be started through a wrapper script that execs it
        assert any(needed in c or needed in wrapper_text(c) for c in commands), needed
    assert any("db migrate" in c for c in commands), "no init job migrates the metadata"
    (postgres,) = services_with_image("postgres")
    for name, svc in airflow.items():
        env = environment(svc)
        assert env.get("AIRFLOW__CORE__EXECUTOR") == "LocalExecutor", name
        db = urlsplit(rendered(env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")))
        assert (db.hostname, db.path) == (postgres, "/airflow"), name


def wrapper_text(command: str) -> str:
    """Text of a script of docker/ that a command runs (``bash /opt/aq-docker/x.sh``)."""
    for word in command.split():
        if word.endswith(".sh"):
            matches = list((ROOT / "docker").rglob(Path(word).name))
            return "".join(p.read_text(encoding="utf-8") for p in matches)
    return ""


def test_postgres_creates_the_databases_with_passwords_from_the_environment():
    (name,) = services_with_image("postgres")
    svc = services()[name]
    scripts = [
        ROOT / v.split(":")[0] for v in svc.get("volumes", [])
        if isinstance(v, str) and v.split(":")[1].startswith("/docker-entrypoint-initdb.d/")
    ]  # fmt: skip
    assert scripts, "no init script mounted in /docker-entrypoint-initdb.d/"
    sql = "\n".join(p.read_text(encoding="utf-8") for p in scripts)
    for db in ("aq", "airflow", "superset"):
        assert re.search(rf"CREATE ROLE {db} LOGIN PASSWORD :'\w+'", sql), f"role {db}"
        assert re.search(rf"CREATE DATABASE {db} OWNER {db}", sql), f"database {db}"
    env = environment(svc)
    wanted = {m.group(1) for m in re.finditer(r"\$\{?([A-Z][A-Z0-9_]*_PASSWORD)", sql)}
    assert wanted, "the init script takes no password from the environment"
    assert sorted(wanted - set(env)) == [], "passwords the init script reads but never gets"


def test_superset_has_the_postgres_driver():
    (path,) = {dockerfile(services()[n]) for n in services_with_image("apache/superset")}
    runs = " ".join(rest for ins, rest in dockerfile_instructions(path) if ins == "RUN")
    assert "psycopg2-binary" in runs


def test_airflow_image_bakes_the_manifest_cosmos_renders_from():
    """openaq_elt is rendered from dbt_project/target/manifest.json (aqi.orchestration)."""
    from aqi.orchestration import dbt_manifest_path
    from aqi.warehouse import DBT_PROJECT_DIR

    dockerfile = (ROOT / "docker" / "airflow" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"dbt parse --project-dir dbt_project --profiles-dir dbt_project", dockerfile)
    assert dbt_manifest_path().relative_to(DBT_PROJECT_DIR).as_posix() == "target/manifest.json"
    # the DAGs and everything they import are in the image
    for folder in ("aqi", "dags", "expectations", "dbt_project", "spark_streaming", "ingestion"):
        assert f"COPY {folder} ./{folder}" in dockerfile, folder

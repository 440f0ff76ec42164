"""docker-compose.yml, the whole stack in containers, checked without a Docker engine.

Every check reads the real files (docker-compose.yml, the Dockerfiles it builds, the scripts
it mounts, .env.example, uv.lock) and the project's own list of variables
(:data:`aqi.core.config.ENV_VARS`); nothing here is a copy of what the compose file says. The
structure is validated against the Compose Specification JSON schema that the
``check-jsonschema`` package ships (Apache-2.0, dev dependency group).

The stack must run what the embedded path runs: the checks compare it with the code of that
path itself - the environment ``aqi airflow up`` and ``aqi dashboards up`` give Airflow and
Superset (:func:`aqi.services.airflow.airflow_env`, :func:`aqi.services.superset.superset_env`),
the commands they run, the read-only role's SQL (``aqi dashboards role-sql``), dbt's schema
names and the checkpoint lock of ``aqi stream``.
"""

from __future__ import annotations

import copy
import importlib.resources
import inspect
import json
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from aqi.core.config import ENV_VARS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE_ONLY_MARKER = "# --- docker compose only ---"
LOOPBACK = "127.0.0.1"

#: variable names the project owns: in a container that runs project code they must be
#: variables the project reads (aqi.core.config.ENV_VARS), or they are typos that nothing reads
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
    "redis": r"7\.\d+(\.\d+)?",  # Superset's results cache
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


@dataclass(frozen=True)
class Stage:
    """One ``FROM`` of a Dockerfile: its name, what it starts from, and its instructions."""

    name: str
    base: str
    steps: tuple[tuple[str, str], ...]

    def copied_from(self) -> set[str]:
        """The stages and images this stage copies files from (``COPY --from=...``)."""
        return {
            found.group(1)
            for ins, rest in self.steps
            if ins in ("COPY", "ADD") and (found := re.search(r"(?:^|\s)--from=(\S+)", rest))
        }


@cache
def dockerfile_stages(path: Path) -> tuple[Stage, ...]:
    """The stages of a Dockerfile in order (global ``ARG``s expanded in ``FROM``)."""
    args: dict[str, str] = {}
    heads: list[tuple[str, str]] = []  # (name, base) of each FROM
    steps: list[list[tuple[str, str]]] = []
    for instruction, rest in dockerfile_instructions(path):
        if instruction == "ARG" and not heads and "=" in rest:
            name, value = rest.split("=", 1)
            args[name.strip()] = value.strip().strip('"')
        elif instruction == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            named = len(words) >= 3 and words[1].lower() == "as"
            heads.append((words[2] if named else str(len(heads)), image))
            steps.append([])
        elif heads:
            steps[-1].append((instruction, rest))
    return tuple(Stage(name, base, tuple(own)) for (name, base), own in zip(heads, steps))


def image_stages(service: dict, *, built_from: bool = False) -> list[Stage]:
    """The stages the service's image is: its ``build.target`` (else the last stage) and the
    stages it starts ``FROM``, in file order. With ``built_from``, also every stage whose
    files it copies (``COPY --from``), and theirs: all that went into building it."""
    stages = dockerfile_stages(dockerfile(service))
    by_name = {stage.name: stage for stage in stages}
    build = service["build"] if isinstance(service["build"], dict) else {}
    wanted, pending = set(), [by_name[build["target"]] if "target" in build else stages[-1]]
    while pending:
        stage = pending.pop()
        if stage.name in wanted:
            continue
        wanted.add(stage.name)
        nexts = {stage.base} | (stage.copied_from() if built_from else set())
        pending.extend(by_name[n] for n in nexts if n in by_name)
    return [stage for stage in stages if stage.name in wanted]


def image_steps(service: dict, *, built_from: bool = False) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of :func:`image_stages`, in file order."""
    return [step for stage in image_stages(service, built_from=built_from) for step in stage.steps]


def final_base_image(service: dict) -> str:
    """The image the service's image starts from (following stage names to an image)."""
    chain = image_stages(service)  # every stage a FROM of the chain names is in it
    names = {stage.name for stage in chain}
    (base,) = [stage.base for stage in chain if stage.base not in names]
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
    if dockerfile(service) is None:
        return False
    steps = image_steps(service, built_from=True)
    copied = " ".join(rest for ins, rest in steps if ins in ("COPY", "ADD"))
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
        image = final_base_image(svc) if dockerfile(svc) else svc.get("image", "")
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
    assert unknown == [], f"not in aqi.core.config.ENV_VARS: {unknown}"


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
    # that Spark and Airflow share it: test_spark_and_airflow_share_the_checkpoint_and_its_lock


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
            image, allowed = final_base_image(svc), accepted
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
    from aqi.services.airflow import COMPONENTS

    airflow = {n: services()[n] for n in services_with_image("apache/airflow")}
    commands = {command_text(s) for s in airflow.values()}
    # the components `aqi airflow up` starts, one per service (a wrapper script may exec one)
    for component in COMPONENTS:
        needed = f"airflow {component}"
        assert any(needed in c or needed in wrapper_text(c) for c in commands), needed
    assert any("airflow db migrate" in c + wrapper_text(c) for c in commands), (
        "no init job migrates the metadata"
    )
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
    for name in services_with_image("apache/superset"):
        steps = image_steps(services()[name], built_from=True)
        runs = " ".join(rest for ins, rest in steps if ins == "RUN")
        assert "psycopg2-binary" in runs, name


def test_airflow_image_bakes_the_manifest_cosmos_renders_from(monkeypatch):
    """openaq_elt is rendered from dbt_project/target/manifest.json (aqi.orchestration)."""
    monkeypatch.delenv("DBT_TARGET_PATH", raising=False)  # the images do not set it
    from aqi.core.warehouse import DBT_PROJECT_DIR
    from aqi.orchestration import dbt_manifest_path

    assert dbt_manifest_path().relative_to(DBT_PROJECT_DIR).as_posix() == "target/manifest.json"
    airflow = services_with_image("apache/airflow")
    assert airflow
    for name in airflow:
        steps = image_steps(services()[name], built_from=True)
        runs = " ".join(rest for ins, rest in steps if ins == "RUN")
        assert re.search(r"dbt parse --project-dir dbt_project --profiles-dir dbt_project", runs)
        # the DAGs and everything they import are in the image
        copies = [rest for ins, rest in steps if ins == "COPY"]
        folders = ("aqi", "dags", "expectations", "dbt_project", "spark_streaming", "ingestion")
        missing = [folder for folder in folders if f"{folder} ./{folder}" not in copies]
        assert missing == [], f"{name}: the image lacks {missing}"


# --- the same pipeline as the embedded path --------------------------------------------------


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume of a service, short or long syntax."""
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            found.append((volume["source"], volume["target"], bool(volume.get("read_only"))))
        else:
            source, target, *mode = str(volume).split(":")
            found.append((source, target, "ro" in ",".join(mode).split(",")))
    return found


def bind_target(service: dict, path: str) -> str | None:
    """Where a service mounts the repository's ``path`` (None if it does not)."""
    wanted = (ROOT / path).resolve()
    for source, target, _ in mounts(service):
        if source.startswith((".", "/")) and (ROOT / source).resolve() == wanted:
            return target
    return None


def volume_at(service: dict, container_path: str) -> tuple[str, bool] | None:
    """(source, read_only) of the mount that holds ``container_path`` (the deepest one)."""
    best = None
    for source, target, read_only in mounts(service):
        holds = container_path == target or container_path.startswith(target.rstrip("/") + "/")
        if holds and (best is None or len(target) > len(best[0])):
            best = (target, source, read_only)
    return None if best is None else (best[1], best[2])


def with_defaults(text: str) -> str:
    """``text`` as compose renders it with an empty .env: defaults, a placeholder if required."""

    def one(match: re.Match) -> str:
        token = match.group(0)
        if token == "$$":
            return "$"
        inner = token[2:-1] if token.startswith("${") else ""
        default = re.match(r"^[A-Za-z_]\w*:?-(.*)$", inner, flags=re.DOTALL)
        return default.group(1) if default else "placeholder"

    return re.sub(r"\$\$|\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*", one, text)


def script_lines(text: str) -> list[str]:
    """The lines of a shell or SQL script that are not comments or blank."""
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith(("#", "--"))
    ]


def dockerfile_env(steps: list[tuple[str, str]]) -> dict[str, str]:
    """The ENV settings of Dockerfile steps (``ENV A=1 B=2`` form): those of
    ``image_steps(svc)`` are the containers', those of ``built_from=True`` the build's too."""
    env = {}
    for instruction, rest in steps:
        if instruction == "ENV":
            for name, value in re.findall(r"([A-Za-z_]\w*)=(\S+)", rest):
                env[name] = value.strip('"')
    return env


def project_stage(service: dict) -> tuple[Stage, str]:
    """The stage that installs the project for the service's image (the one that copies
    uv.lock) and the folder it installs it in (its WORKDIR there)."""
    for stage in image_stages(service, built_from=True):
        workdir = "/"
        for instruction, rest in stage.steps:
            if instruction == "WORKDIR":
                workdir = rest.strip()
            elif instruction == "COPY" and "uv.lock" in rest.split():
                return stage, workdir
    raise AssertionError(f"{dockerfile(service)}: no stage of the image copies uv.lock")


def app_dir(service: dict) -> str:
    """The folder the service's image installs the project into."""
    return project_stage(service)[1]


def one_shot(names: list[str]) -> list[str]:
    return [n for n in names if n in one_shot_services()]


def locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    (version,) = [p["version"] for p in lock["package"] if p["name"] == package]
    return version


def embedded_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str):
    """Settings of an embedded installation in ``tmp_path`` (nothing from this machine)."""
    from aqi.core.config import load_settings

    for name in list(os.environ):
        if name not in ("PATH", "HOME"):
            monkeypatch.delenv(name)
    return load_settings({"AQ_HOME": str(tmp_path), **env}, dotenv=None)


def test_spark_runners_carry_the_kafka_connector_of_the_projects_pom():
    """Every container that may run `aqi stream` (the spark service, Airflow's drain_stream)
    reads Kafka with Spark's own source, whose jars its image resolved from jvm/pom.xml at
    build time: the same pinned jars as `make jvm`, and none fetched when a stream starts."""
    from jvm_support import pom_properties

    (spark,) = services_with_image("apache/spark")
    assert command_text(services()[spark]).split() == ["aqi", "stream"]
    # SPARK_HOME is the venv's pyspark: the jars, and so the connector's version, are uv.lock's
    spark_env = dockerfile_env(image_steps(services()[spark]))
    assert re.search(r"/site-packages/pyspark$", spark_env["SPARK_HOME"])
    assert pom_properties()["spark.version"] == locked_version("pyspark")

    for name in [spark, *services_with_image("apache/airflow")]:
        svc = services()[name]
        args = environment(svc).get("PYSPARK_SUBMIT_ARGS", "")
        assert "packages" not in args and "spark.jars" not in args, f"{name}: {args}"
        steps = image_steps(svc, built_from=True)
        runs = " ".join(rest for ins, rest in steps if ins == "RUN")
        assert re.search(r"mvn .*--file \S*jvm/pom\.xml .*dependency:copy-dependencies", runs), (
            f"{name}: its image does not resolve jvm/pom.xml"
        )
        copies = [rest for ins, rest in steps if ins == "COPY"]
        assert any(rest.split()[0] == "jvm" for rest in copies), f"{name}: jvm/ is not copied"
        venv = app_dir(svc).rstrip("/") + "/.venv"
        assert any(
            rest.startswith("--from=") and rest.endswith(f"{venv}/share/aq-jvm/spark")
            for rest in copies
        ), f"{name}: the connector jars do not reach {venv}/share/aq-jvm/spark: {copies}"
        ignored = (dockerfile(svc).parent / f"{dockerfile(svc).name}.dockerignore").read_text()
        assert "!jvm/" in ignored.split(), f"{name}: the build context leaves jvm/ out"


def test_project_images_run_the_environment_where_it_was_built():
    """One stage installs the project (uv.lock) and the images copy it: the environment must
    land at the path it was built at (its scripts' #! lines and the editable install name that
    path), beside the Python it was made with (uv's own, which runs on every base image, not
    the build stage's), and come first on the containers' PATH."""
    project = {n for n, svc in services().items() if runs_project_code(svc)}
    (collector,) = [n for n, s in services().items() if command_text(s).startswith("aqi collect")]
    runners = {
        collector,
        *services_with_image("apache/spark"),
        *services_with_image("apache/airflow"),
    }
    assert runners <= project, f"no project installed in {sorted(runners - project)}"
    for name in sorted(project):
        svc = services()[name]
        builder, app = project_stage(svc)
        build_env = dockerfile_env(image_steps(svc, built_from=True))
        venv = build_env["UV_PROJECT_ENVIRONMENT"]
        assert venv.startswith(app.rstrip("/") + "/"), f"{name}: {venv} outside {app}"
        if builder.name not in {stage.name for stage in image_stages(svc)}:
            python_dir = build_env.get("UV_PYTHON_INSTALL_DIR")
            assert build_env.get("UV_PYTHON_PREFERENCE") == "only-managed" and python_dir, (
                f"{name}: the environment copied from {builder.name} needs uv's own Python"
            )
            copies = [rest.split() for ins, rest in image_steps(svc) if ins == "COPY"]
            copied = {
                tuple(w.rstrip("/") for w in words if not w.startswith("--"))
                for words in copies
                if f"--from={builder.name}" in words
            }
            for folder in (app.rstrip("/"), python_dir.rstrip("/")):
                assert (folder, folder) in copied, f"{name}: {folder} is not copied to {folder}"
        runtime_path = dockerfile_env(image_steps(svc)).get("PATH", "")
        assert runtime_path.startswith(f"{venv}/bin:"), f"{name}: PATH={runtime_path}"


def test_kafka_runs_the_version_of_the_embedded_path():
    from jvm_support import pom_properties

    (kafka,) = services_with_image("apache/kafka")
    assert split_image(services()[kafka]["image"])[1] == pom_properties()["kafka.version"]
    (spark,) = services_with_image("apache/spark")
    spark_tag = split_image(final_base_image(services()[spark]))[1]
    assert spark_tag.split("-")[0] == pom_properties()["spark.version"]


def test_spark_and_airflow_share_the_checkpoint_and_its_lock():
    """openaq_elt's drain_stream (Airflow) knows the spark service's `aqi stream` is running by
    the flock next to its checkpoint: both must see the same file, on one writable volume."""
    from aqi.core.config import load_settings
    from spark_streaming.job import QUERY_NAME, _lock_path

    names = services_with_image("apache/spark") + services_with_image("apache/airflow")
    homes = {environment(services()[n]).get("AQ_HOME") for n in names}
    assert len(homes) == 1 and None not in homes, f"AQ_HOME differs: {homes}"
    (home,) = homes
    settings = load_settings({"AQ_HOME": home}, dotenv=None)
    checkpoint = settings.checkpoints_dir / QUERY_NAME
    named_volumes = set(compose().get("volumes") or {})
    for path in (checkpoint, _lock_path(checkpoint)):
        holders = {n: volume_at(services()[n], path.as_posix()) for n in names}
        sources = {h[0] for h in holders.values() if h}
        assert len(sources) == 1 and None not in holders.values(), f"{path}: {holders}"
        assert sources <= named_volumes, f"{path} is not on a named volume: {holders}"
        assert not any(h[1] for h in holders.values()), f"{path} is read-only somewhere"


def test_airflow_runs_the_mounted_checkout_of_the_project():
    """dags/ and the packages the DAGs import, from the checkout, over the image's copies."""
    from aqi.core.environments import REPO_ROOT
    from aqi.services.airflow import DAGS_DIR

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    code = [DAGS_DIR.relative_to(REPO_ROOT).as_posix(), *packages]
    # the dbt project: what dbt reads, item by item (target/ is written, see below)
    dbt_items = sorted(
        f"dbt_project/{p.name}"
        for p in (ROOT / "dbt_project").iterdir()
        if not p.name.startswith(".")
        and p.name not in ("README.md", "target", "logs", "dbt_packages")
    )
    airflow = services_with_image("apache/airflow")
    assert airflow
    for name in airflow:
        svc = services()[name]
        path = dockerfile(svc)
        app = app_dir(svc)
        image_env = dockerfile_env(image_steps(svc, built_from=True))
        # the image's venv stays visible: the project installed in editable mode from `app`
        assert image_env.get("UV_PROJECT_ENVIRONMENT", "").startswith(app + "/"), name
        runs = " ".join(rest for ins, rest in image_steps(svc, built_from=True) if ins == "RUN")
        assert "--no-editable" not in runs, f"{path}: the venv would not import the mounts"
        for _, target, _ in mounts(svc):
            assert not image_env["UV_PROJECT_ENVIRONMENT"].startswith(target.rstrip("/") + "/")
            assert target.rstrip("/") != image_env["UV_PROJECT_ENVIRONMENT"], name
        for item in code + dbt_items:
            target = bind_target(svc, item)
            assert target == f"{app}/{item}", f"{name}: ./{item} is not mounted at {app}/{item}"
            assert volume_at(svc, target)[1], f"{name}: ./{item} should be read-only"
        dags = bind_target(svc, "dags")
        assert environment(svc).get("AIRFLOW__CORE__DAGS_FOLDER") == dags, name


def test_airflow_init_migrates_and_regenerates_the_manifest_cosmos_renders_from(monkeypatch):
    """The steps `aqi airflow up` takes before it starts the components, same commands."""
    monkeypatch.delenv("DBT_TARGET_PATH", raising=False)  # the images do not set it
    from aqi import orchestration
    from aqi.core.warehouse import DBT_PROJECT_DIR
    from aqi.services import airflow as embedded

    migrate = re.search(r"_run_airflow\((\[[^\]]*\])", inspect.getsource(embedded))
    parse = re.search(r"run_dbt\(settings, (\[[^\]]*\])", inspect.getsource(orchestration))
    steps = [
        "airflow " + " ".join(json.loads(migrate.group(1))),
        "aqi dbt " + " ".join(json.loads(parse.group(1))),
    ]
    assert steps == ["airflow db migrate", "aqi dbt parse --quiet"]

    airflow = services_with_image("apache/airflow")
    (init,) = one_shot(airflow)
    command = command_text(services()[init])
    lines = script_lines(command + "\n" + wrapper_text(command))
    positions = [next((i for i, ln in enumerate(lines) if ln == step), None) for step in steps]
    assert None not in positions and positions == sorted(positions), (steps, lines)

    # the manifest lands on a volume every Airflow container mounts at dbt_project/target
    manifest = orchestration.dbt_manifest_path().relative_to(DBT_PROJECT_DIR.parent)
    named_volumes = set(compose().get("volumes") or {})
    holders = {}
    for name in airflow:
        svc = services()[name]
        holders[name] = volume_at(svc, f"{app_dir(svc)}/{manifest.as_posix()}")
        if name != init:
            deps = svc.get("depends_on") or {}
            assert (deps.get(init) or {}).get("condition") == "service_completed_successfully"
    sources = {h[0] for h in holders.values() if h}
    assert len(sources) == 1 and sources <= named_volumes, f"dbt target: {holders}"
    assert not holders[init][1], "airflow-init must be able to write the manifest"


#: keys of the embedded Airflow's environment that the containers leave to the image, and why
AIRFLOW_IMAGE_DEFAULTS = {
    "AIRFLOW_HOME": "the image's /opt/airflow",
    "AIRFLOW__API__HOST": "the image's 0.0.0.0: published on 127.0.0.1 by compose",
    "AIRFLOW__API__PORT": "the image's 8080 (EXECUTION_API_SERVER_URL is checked against it)",
    "AIRFLOW__API__BASE_URL": "relative URLs; the UI is reached through the published port",
    "PATH": "the Dockerfile puts the project's venv first",
    "AIRFLOW__COSMOS__CACHE_DIR": "one installation per container: Cosmos' default /tmp/cosmos",
}


def test_airflow_tasks_get_the_environment_of_the_embedded_airflow(tmp_path, monkeypatch):
    from aqi.services.airflow import airflow_env

    first = airflow_env(embedded_settings(tmp_path / "a", monkeypatch))
    second = airflow_env(
        embedded_settings(
            tmp_path / "b", monkeypatch,
            AQ_AIRFLOW_PORT="18080", AQ_PG_PORT="15432", AQ_KAFKA_PORT="19092",
        )
    )  # fmt: skip
    expected = set(first) - {"HOME"}
    assert set(AIRFLOW_IMAGE_DEFAULTS) <= expected, "a stale exemption"
    # values that do not depend on the installation (telemetry, executor, ...) must be equal
    constant = {
        k
        for k in expected - set(AIRFLOW_IMAGE_DEFAULTS)
        if first[k] == second[k] and str(ROOT) not in first[k]
    }
    assert {"AIRFLOW__COSMOS__ENABLE_TELEMETRY", "GX_ANALYTICS_ENABLED"} <= constant
    # Cosmos' partial-parse cache is each installation's own, not the machine's /tmp/cosmos
    assert first["AIRFLOW__COSMOS__CACHE_DIR"].startswith(first["AIRFLOW_HOME"])
    assert first["AIRFLOW__COSMOS__CACHE_DIR"] != second["AIRFLOW__COSMOS__CACHE_DIR"]

    (api_server,) = [
        n for n in services_with_image("apache/airflow")
        if "airflow api-server" in wrapper_text(command_text(services()[n]))
    ]  # fmt: skip
    (spark,) = services_with_image("apache/spark")
    (collector,) = [n for n, s in services().items() if command_text(s).startswith("aqi collect")]
    assert REQUIRED_VALUE.fullmatch(environment(services()[collector]).get("OPENAQ_API_KEY", ""))
    for name in services_with_image("apache/airflow"):
        svc = services()[name]
        env = environment(svc)
        available = set(env) | set(dockerfile_env(image_steps(svc)))
        missing = sorted(expected - set(AIRFLOW_IMAGE_DEFAULTS) - available)
        assert missing == [], f"{name}: the embedded Airflow sets {missing}"
        different = {
            k: (first[k], env[k])
            for k in constant
            if k in env and with_defaults(env[k]).lower() != first[k].lower()
        }
        assert different == {}, f"{name}: embedded vs compose {different}"
        # the tasks reach the API server's container, on the port it listens on
        url = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
        assert (url.hostname, url.port, url.path) == (api_server, 8080, "/execution/"), name
        published = {str(p).rsplit(":", 1)[-1] for p in services()[api_server]["ports"]}
        assert published == {"8080"}, published
        # the tasks run `aqi stream --available-now` (as the spark service) and `aqi backfill`
        # (OpenAQ, as the collector): they get those services' project settings
        assert REQUIRED_VALUE.fullmatch(env.get("OPENAQ_API_KEY", "")), f"{name}: aqi backfill"
        for other, prefix in ((spark, ("AQ_", "KAFKA_")), (collector, ("OPENAQ_",))):
            wanted = {
                k: v for k, v in environment(services()[other]).items()
                if k in ENV_VARS and k.startswith(prefix)
            }  # fmt: skip
            absent = {k: v for k, v in wanted.items() if env.get(k) != v}
            assert absent == {}, f"{name}: {other}'s settings differ: {sorted(absent)}"
    # the components trust each other's tokens: one secret, the same in every container
    for key in (
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CORE__FERNET_KEY",
    ):
        values = {
            environment(services()[n]).get(key) for n in services_with_image("apache/airflow")
        }
        assert len(values) == 1 and REQUIRED_VALUE.fullmatch(values.pop() or ""), key


def superset_services() -> tuple[str, str]:
    """(init job, web server) of the Superset image."""
    names = services_with_image("apache/superset")
    (init,) = one_shot(names)
    (web,) = [n for n in names if n != init]
    return init, web


def test_superset_runs_the_projects_settings_file(tmp_path, monkeypatch):
    """One superset_config.py (superset/), given the environment `aqi dashboards up` gives it."""
    from aqi.services.superset import CONFIG_PATH, GUNICORN_WORKERS, superset_env

    stray = [p for p in (ROOT / "docker").rglob("superset_config.py")]
    assert stray == [], f"a second Superset settings file: {stray}"
    required = set(re.findall(r'_required\("(\w+)"\)', CONFIG_PATH.read_text(encoding="utf-8")))
    assert {"SUPERSET_SECRET_KEY", "SUPERSET_METADATA_URI"} <= required

    first = superset_env(embedded_settings(tmp_path / "a", monkeypatch))
    second = superset_env(embedded_settings(tmp_path / "b", monkeypatch, AQ_PG_PORT="15432"))
    expected = set(first) - {"PATH", "HOME"}
    constant = {k for k in expected if first[k] == second[k] and str(ROOT) not in first[k]}
    (postgres,) = services_with_image("postgres")
    for name in superset_services():
        svc = services()[name]
        env = environment(svc)
        config = bind_target(svc, CONFIG_PATH.relative_to(ROOT).as_posix())
        assert config and env.get("SUPERSET_CONFIG_PATH") == config, name
        assert volume_at(svc, config)[1], f"{name}: the settings file should be read-only"
        assert "SUPERSET_CONFIG_PATH" not in dockerfile_env(image_steps(svc))
        assert sorted(required - set(env)) == [], f"{name}: superset_config.py needs them"
        assert sorted(expected - set(env)) == [], f"{name}: the embedded Superset sets them"
        different = {k: (first[k], env[k]) for k in constant if with_defaults(env[k]) != first[k]}
        assert different == {}, f"{name}: embedded vs compose {different}"
        metadata = urlsplit(rendered(env["SUPERSET_METADATA_URI"]))
        assert (metadata.scheme, metadata.hostname, metadata.path) == (
            "postgresql+psycopg2",
            postgres,
            "/superset",
        )
    _, web = superset_services()
    assert environment(services()[web]).get("SERVER_WORKER_AMOUNT") == str(GUNICORN_WORKERS)


def test_superset_draws_the_same_offline_borders_as_the_embedded_one():
    """The image downloads the world-atlas archive superset/aq_basemap.py pins (version and
    SHA-256, checked at build time) to where SUPERSET_BASEMAP_ARCHIVE points."""
    from aqi.core.environments import _basemap_pins

    package, version, sha256 = _basemap_pins()
    for name in superset_services():
        svc = services()[name]
        path, steps = dockerfile(svc), image_steps(svc, built_from=True)
        args = {
            key.strip(): value.strip().strip('"')
            for instruction, rest in steps
            if instruction == "ARG" and "=" in rest
            for key, value in [rest.split("=", 1)]
        }
        assert (args.get("WORLD_ATLAS_VERSION"), args.get("WORLD_ATLAS_SHA256")) == (
            version, sha256,
        ), f"{path}: not the pin of superset/aq_basemap.py"  # fmt: skip
        (download,) = [rest for instruction, rest in steps
                       if instruction == "RUN" and "registry.npmjs.org" in rest]  # fmt: skip

        def expand(text: str, args: dict = args) -> str:
            return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], text)

        assert expand(f"/{package}/-/{package}-${{WORLD_ATLAS_VERSION}}.tgz") in expand(download)
        assert '"${WORLD_ATLAS_SHA256}"' in download
        written = re.findall(r'"(/[^"]+\.tgz)"', download)
        env = environment(svc)
        assert [expand(w) for w in written] == [env.get("SUPERSET_BASEMAP_ARCHIVE")], name


def test_superset_mounts_every_module_its_settings_load_next_to_them():
    """superset_config.py loads modules from its own folder (`_sibling`: the offline map,
    the security manager): each is mounted, read-only, next to the mounted settings file."""
    from aqi.services.superset import CONFIG_PATH

    siblings = re.findall(r'_sibling\("(\w+)"\)', CONFIG_PATH.read_text())
    assert {"aq_basemap", "aq_security"} <= set(siblings)
    for name in superset_services():
        svc = services()[name]
        config = bind_target(svc, CONFIG_PATH.relative_to(ROOT).as_posix())
        for sibling in siblings:
            module = bind_target(svc, f"superset/{sibling}.py")
            assert module == config.rsplit("/", 1)[0] + f"/{sibling}.py", (name, sibling)
            assert volume_at(svc, module)[1], f"{name}: {sibling}.py should be read-only"


def test_superset_provisions_the_bundle_at_start_as_the_read_only_role():
    from aqi.services import superset as embedded

    init, web = superset_services()
    svc = services()[init]
    env = environment(svc)
    deps = services()[web].get("depends_on") or {}
    assert (deps.get(init) or {}).get("condition") == "service_completed_successfully"

    # the metadata commands of `aqi dashboards up`, in order, then the project's provision.py
    commands = [
        "superset " + " ".join(json.loads(m))
        for m in re.findall(r"_run_superset\((\[[^\]]*\])", inspect.getsource(embedded))
    ]
    assert commands == ["superset db upgrade", "superset init"]
    lines = script_lines(wrapper_text(command_text(svc)))
    positions = [lines.index(c) if c in lines else None for c in commands]
    assert None not in positions and positions == sorted(positions), (commands, lines)
    provision = [i for i, ln in enumerate(lines) if '"$SUPERSET_PROVISION_SCRIPT"' in ln]
    assert provision and provision[0] > positions[-1], "provision.py must run after superset init"
    for var, path in (
        ("SUPERSET_PROVISION_SCRIPT", embedded.PROVISION_SCRIPT),
        ("SUPERSET_BUNDLE", embedded.BUNDLE_DIR),
    ):
        target = bind_target(svc, path.relative_to(ROOT).as_posix())
        assert target and env.get(var) == target, f"{init}: {var} is not the mounted {path}"
    assert "fab create-admin" not in wrapper_text(command_text(svc)), "provision.py makes the admin"
    assert REQUIRED_VALUE.fullmatch(env.get("SUPERSET_ADMIN_PASSWORD", "")), "admin from .env"

    # the warehouse: the read-only role, on the server and database of AQ_DATABASE_URL
    (spark,) = services_with_image("apache/spark")
    warehouse = urlsplit(rendered(environment(services()[spark])["AQ_DATABASE_URL"]))
    reader = urlsplit(env["SUPERSET_WAREHOUSE_URL"])
    assert reader.scheme == "postgresql+psycopg2" and reader.password is None
    assert (reader.username, reader.hostname, reader.port, reader.path) == (
        embedded.READER_ROLE,
        warehouse.hostname,
        warehouse.port,
        warehouse.path,
    )
    (postgres,) = services_with_image("postgres")
    assert env["SUPERSET_READER_PASSWORD"] == environment(services()[postgres]).get(
        "SUPERSET_READER_PASSWORD"
    ), "superset-init and the postgres init must use one password"
    assert REQUIRED_VALUE.fullmatch(env["SUPERSET_READER_PASSWORD"])


def test_postgres_creates_the_read_only_role_of_the_embedded_path(tmp_path, monkeypatch):
    """The role SQL run at database init is `aqi dashboards role-sql` for this stack."""
    from aqi.core.connections import DATABASES
    from aqi.services.superset import READER_SCHEMA, reader_role_sql

    (postgres,) = services_with_image("postgres")
    svc = services()[postgres]
    (spark,) = services_with_image("apache/spark")
    url = with_defaults(environment(services()[spark])["AQ_DATABASE_URL"])
    warehouse = urlsplit(url).path.lstrip("/")
    init = "\n".join(
        (ROOT / source).read_text(encoding="utf-8")
        for source, target, _ in mounts(svc)
        if target.startswith("/docker-entrypoint-initdb.d/")
    )
    # the init script runs the mounted SQL file in the warehouse, password as a psql variable
    sql_path = re.search(r"^READER_ROLE_SQL=(\S+)$", init, flags=re.MULTILINE).group(1)
    (sql_source,) = [s for s, t, _ in mounts(svc) if t == sql_path]
    assert re.search(
        rf'--dbname {warehouse}\s*\\\s*-v password="\$SUPERSET_READER_PASSWORD"\s*\\\s*'
        r'-f "\$READER_ROLE_SQL"',
        init,
    ), "the init script must run the role SQL in the warehouse with the reader password"
    assert "SUPERSET_READER_PASSWORD" in environment(svc)

    settings = embedded_settings(tmp_path, monkeypatch, AQ_DATABASE_URL=url)
    expected = script_lines(reader_role_sql(settings))
    actual = script_lines((ROOT / sql_source).read_text(encoding="utf-8"))
    assert actual == expected, "docker/postgres/superset-reader-role.sql: regenerate it"
    assert f"GRANT USAGE ON SCHEMA {READER_SCHEMA} TO" in "\n".join(actual)

    # like `aqi dashboards up`: nobody but the owner connects to the other databases
    revoked = re.search(r"REVOKE ALL ON DATABASE ([\w, ]+) FROM PUBLIC", init)
    assert revoked, "CONNECT is not revoked from PUBLIC"
    databases = {d.strip() for d in revoked.group(1).split(",")}
    assert set(DATABASES) | {"postgres"} <= databases


def test_the_reader_schema_is_dbts_gold_schema():
    """The role reads the schema dbt builds the gold marts in, and the bundle reads it."""
    from aqi.services.superset import BUNDLE_DIR, READER_SCHEMA

    project = yaml.safe_load((ROOT / "dbt_project" / "dbt_project.yml").read_text("utf-8"))
    models = project["models"][project["name"]]
    assert models["marts"]["gold"]["+schema"] == READER_SCHEMA
    assert (ROOT / "dbt_project" / "models" / "marts" / "gold").is_dir()
    # the folder's name is the schema's, verbatim (no "<target>_" prefix)
    macro = (ROOT / "dbt_project" / "macros" / "generate_schema_name.sql").read_text("utf-8")
    assert re.search(r"\{\{\s*custom_schema_name\s*\|\s*trim\s*\}\}", macro)
    schemas = {
        yaml.safe_load(p.read_text(encoding="utf-8")).get("schema")
        for p in (BUNDLE_DIR / "datasets").rglob("*.yaml")
    }
    assert schemas == {READER_SCHEMA}

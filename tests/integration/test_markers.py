"""The markers tell the truth: a test not marked integration is a unit test, and a unit test
that starts a process or opens a network socket fails (tests/conftest.py). Integration itself:
the tests below run pytest on small test files whose tests start processes and bind sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    unit: u\n    integration: i\n")
    return pytester


def test_a_unit_test_that_starts_a_process_or_binds_a_socket_fails(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_example="""
import socket, subprocess, sys
import pytest

def test_pure():
    assert sum([1, 2]) == 3

def test_process():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

def test_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))

def test_unix_socket_is_not_the_network(tmp_path):
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "s"))

@pytest.mark.integration
def test_declared():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
"""
    )
    result = suite.runpytest("-p", "no:cacheprovider", "-m", "unit")
    result.assert_outcomes(passed=4, errors=2, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "test_example.py::test_process is marked unit but starts a process: mark it integration",
            "test_example.py::test_server is marked unit but binds a network socket: mark it integration",
        ]
    )
    assert suite.runpytest("-p", "no:cacheprovider", "-m", "integration").ret == 0


def test_both_markers_is_a_usage_error(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_both="""
import pytest
pytestmark = pytest.mark.unit

@pytest.mark.integration
def test_x():
    pass
"""
    )
    result = suite.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*marked both unit and integration*test_x*"])


def test_tests_of_one_xdist_group_run_on_one_worker(suite: pytest.Pytester) -> None:
    """`make test` runs 2 workers with --dist loadgroup: a module's tests that share a costly
    fixture (a stack with Airflow or Superset) are grouped so that only one worker builds it.
    pytest 9.2 made xdist ignore the groups without a word (pyproject.toml pins below it);
    this fails if an upgrade does that again."""
    suite.makepyfile(
        test_grouped="""
import os
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("stack")]

@pytest.mark.parametrize("n", range(6))
def test_member(n):
    print("WORKER", os.environ["PYTEST_XDIST_WORKER"])
""",
        test_free="""
import pytest

pytestmark = pytest.mark.integration

@pytest.mark.parametrize("n", range(6))
def test_other(n):
    pass
""",
    )
    result = suite.runpytest_subprocess("-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=12)
    workers = {
        line.split()[0]
        for line in result.outlines
        if "PASSED" in line and "test_grouped.py::test_member" in line
    }
    assert len(workers) == 1, result.outlines

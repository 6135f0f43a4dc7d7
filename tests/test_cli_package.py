"""The CLI installs on its own (cli/, standard library only) and keeps the portal's rules."""

from __future__ import annotations

import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from environments.lib import durations as portal_durations
from tests.conftest import ROOT

CLI = ROOT / "cli"  # the distribution; the code is ROOT / "ephemera_cli"

# Valid, invalid and edge-case durations: the CLI's copy and the portal's module must
# agree on every one (the same value, or both refuse).
DURATIONS = [
    "30m", "4h", "3d", "1d12h", "1d12h30m", "0m", "0d0h0m", "90m", "25h", " 2h ", "2H",
    "1h1d", "h", "", "d", "1.5h", "-1h", "10", "soon", "1d 2h", "007m", "999999d",
]  # fmt: skip


@pytest.mark.parametrize("text", DURATIONS)
def test_it_parses_durations_exactly_like_the_portal(text):
    from ephemera_cli import durations as cli_durations

    def outcome(module):
        try:
            return module.parse_duration(text)
        except ValueError as exc:
            return ("refused", str(exc))

    assert outcome(cli_durations) == outcome(portal_durations)


def test_it_formats_durations_and_knows_the_minimum_like_the_portal():
    from ephemera_cli import durations as cli_durations

    for seconds in (0, 59, 60, 3599, 3600, 5400, 86400, 90061, 10**7):
        assert cli_durations.format_duration(seconds) == portal_durations.format_duration(seconds)
    assert cli_durations.MIN_TTL_SECONDS == portal_durations.MIN_TTL_SECONDS


def test_its_code_imports_only_the_standard_library():
    imported = set()
    for path in (ROOT / "ephemera_cli").glob("*.py"):
        for line in path.read_text().splitlines():
            match = re.match(r"^\s*(?:from|import) ([a-zA-Z_][\w]*)", line)
            if match:
                imported.add(match.group(1))
    outside = imported - set(sys.stdlib_module_names) - {"ephemera_cli"}
    assert not outside, f"the CLI imports {outside}: it must need the standard library only"


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new virtualenv (pip and setuptools as `python -m venv` gives them) with
    `pip install ./cli` in it, offline: the build itself needs nothing (cli/build_backend.py)."""
    where = tmp_path_factory.mktemp("cli-venv") / "venv"
    venv.EnvBuilder(with_pip=True).create(where)
    python = where / "bin" / "python"
    environ = {
        "PATH": f"{where / 'bin'}:/usr/bin:/bin",
        "HOME": str(where.parent),
        "PIP_NO_INDEX": "1",  # offline: nothing may be downloaded
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    # A copy of what the build reads, so it leaves nothing in the checkout.
    source = where.parent / "src"
    source.mkdir()
    for part in ("cli", "ephemera_cli"):
        subprocess.run(["cp", "-r", str(ROOT / part), str(source / part)], check=True)
    build = source / "cli"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", str(build)],
        env=environ,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return where


def test_it_installs_alone_into_a_fresh_virtualenv_with_no_dependency(fresh_venv, tmp_path):
    python = fresh_venv / "bin" / "python"
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
        env={"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PATH": "/usr/bin:/bin"},
    ).stdout
    packages = {line.split("==")[0].lower() for line in listed.split()}
    # What `python -m venv` puts there, plus the CLI: nothing came along with it.
    assert packages - {"pip", "setuptools"} == {"ephemera-cli"}, listed
    requires = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.requires('ephemera-cli'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert requires == "None"

    environ = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    version = subprocess.run(
        [fresh_venv / "bin" / "ephemera", "--version"],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp_path,  # not the checkout: only the installed copy can answer
    )
    assert version.returncode == 0, version.stderr
    from ephemera_cli import __version__

    assert version.stdout.strip() == f"ephemera {__version__}"

    # The portal is not there, and the CLI does not need it.
    isolated = subprocess.run(
        [python, "-c", "import ephemera_cli.main, sys; print('django' in sys.modules)"],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp_path,
    )
    assert isolated.stdout.strip() == "False", isolated.stderr
    assert (
        subprocess.run(
            [python, "-c", "import environments"], capture_output=True, cwd=tmp_path
        ).returncode
        == 1
    )


def test_its_help_documents_the_exit_codes(fresh_venv, tmp_path):
    from ephemera_cli.main import Exit

    shown = subprocess.run(
        [fresh_venv / "bin" / "ephemera", "--help"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    ).stdout
    section = shown.split("exit codes:", 1)[1]
    documented = {int(code) for code in re.findall(r"^  (\d+)  ", section, re.M)}
    assert documented == {int(code) for code in Exit}
    # docs/ci.md gives the same table.
    ci = (ROOT / "docs" / "ci.md").read_text()
    rows = re.findall(r"^\| (\d+) \| ", ci.split("### Exit codes", 1)[1], re.M)
    assert {int(code) for code in rows} == {int(code) for code in Exit}


def test_a_missing_target_is_a_usage_error_before_anything_else(tmp_path):
    # `ephemera down $ENV_ID` with an empty variable must never pick something itself.
    for command in ("down", "wait", "status", "events"):
        result = subprocess.run(
            [sys.executable, "-m", "ephemera_cli", command],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **_python_path()},
        )
        assert result.returncode == 2, (command, result.stderr)
        assert "say which environment" in result.stderr


def test_it_tells_a_network_error_apart(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ephemera_cli", "--json", "status", "deadbeef"],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "EPHEMERA_URL": "http://127.0.0.1:9",  # the discard port: connection refused
            "EPHEMERA_TOKEN": "eph_00000000_unused",
            **_python_path(),
        },
    )
    assert result.returncode == 7, result.stderr
    assert "cannot reach http://127.0.0.1:9/api/v1" in result.stderr
    assert "trying again" in result.stderr  # a GET is retried before giving up
    import json

    assert json.loads(result.stdout)["exit_code"] == 7


def _python_path() -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}

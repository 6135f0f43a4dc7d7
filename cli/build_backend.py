"""A PEP 517 build backend in the standard library alone, for this one pure-Python package.

The package's code is ../ephemera_cli/ in the repository (where the portal's tests and
`make install` use it too; it imports only the standard library, an import-linter
contract checks it never imports the portal); in an sdist it sits beside this file.

Why not setuptools: the setuptools that `python -m venv` ships (65 on Python 3.11) cannot
build a wheel without the separate `wheel` package, so `pip install ./cli` would need the
network. With this backend it needs nothing: `pip install ./cli` works offline, in a fresh
virtualenv, with or without build isolation. It reads the [project] table of
pyproject.toml (name, version from ephemera_cli/__init__.py, description, scripts) and
writes a standard wheel (https://packaging.python.org/en/latest/specifications/).
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "ephemera_cli"
# Beside this file in an sdist; one level up in the repository (pip builds in place).
SOURCE = HERE if (HERE / PACKAGE).is_dir() else HERE.parent
TAG = "py3-none-any"


def _project() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10: install a wheel built elsewhere instead
        raise RuntimeError("building ephemera-cli from source needs Python 3.11+") from None
    project = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]
    init = (SOURCE / PACKAGE / "__init__.py").read_text()
    version = re.search(r'__version__ = "([^"]+)"', init)
    if version is None or version.group(1) != project["version"]:
        raise RuntimeError("the version in pyproject.toml and ephemera_cli/__init__.py differ")
    return project


def _metadata(project: dict) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project.get('requires-python', '>=3')}",
    ]
    return "\n".join(lines) + "\n"


def _files() -> list[Path]:
    if not (SOURCE / PACKAGE).is_dir():
        raise RuntimeError(f"no {PACKAGE}/ beside or above {HERE}: build from a checkout")
    return sorted(p for p in (SOURCE / PACKAGE).rglob("*.py") if "__pycache__" not in p.parts)


def _dist_info(project: dict) -> str:
    return f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _write_dist_info(project: dict) -> dict[str, bytes]:
    scripts = project.get("scripts", {})
    entry_points = "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in scripts.items())
    wheel = f"Wheel-Version: 1.0\nGenerator: ephemera-cli build_backend\nRoot-Is-Purelib: true\nTag: {TAG}\n"
    info = _dist_info(project)
    return {
        f"{info}/METADATA": _metadata(project).encode(),
        f"{info}/WHEEL": wheel.encode(),
        f"{info}/entry_points.txt": entry_points.encode(),
    }


# --- PEP 517 hooks ----------------------------------------------------------------------


def get_requires_for_build_wheel(config_settings=None) -> list[str]:
    return []


def get_requires_for_build_sdist(config_settings=None) -> list[str]:
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None) -> str:
    project = _project()
    for name, data in _write_dist_info(project).items():
        path = Path(metadata_directory) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return _dist_info(project)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None) -> str:
    project = _project()
    filename = f"{project['name'].replace('-', '_')}-{project['version']}-{TAG}.whl"
    contents = {str(p.relative_to(SOURCE)): p.read_bytes() for p in _files()}
    contents.update(_write_dist_info(project))
    record_name = f"{_dist_info(project)}/RECORD"
    record = [_record_line(name, data) for name, data in contents.items()] + [f"{record_name},,"]
    contents[record_name] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(Path(wheel_directory) / filename, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in contents.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
    return filename


def build_sdist(sdist_directory, config_settings=None) -> str:
    project = _project()
    base = f"{project['name'].replace('-', '_')}-{project['version']}"
    files = [
        (HERE / "pyproject.toml", "pyproject.toml"),
        (HERE / "build_backend.py", "build_backend.py"),
        *((path, str(path.relative_to(SOURCE))) for path in _files()),
    ]
    with tarfile.open(Path(sdist_directory) / f"{base}.tar.gz", "w:gz") as sdist:
        for path, name in files:
            sdist.add(path, arcname=f"{base}/{name}")
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = _metadata(project).encode()
        info.size = len(data)
        sdist.addfile(info, io.BytesIO(data))
    return f"{base}.tar.gz"

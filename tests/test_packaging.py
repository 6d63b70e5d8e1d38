"""envs/spdnn.yaml (for --use-conda on clusters) lists what pyproject.toml requires; the docs are the
repository's own; the code passes its linter."""

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_conda_env_matches_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs" / "spdnn.yaml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    strip = lambda d: d.split("#")[0].strip()  # noqa: E731
    assert sorted(strip(p) for p in pip if not p.startswith(".")) == sorted(strip(d) for d in deps)
    assert "python=3.11" in env["dependencies"]


def test_docs_are_self_contained():
    """The code and config cite the repository's own docs, not a design file users do not have."""
    cited = [p for p in [*ROOT.glob("src/spdnn/*.py"), *ROOT.glob("config/*.yaml"), *ROOT.glob("workflow/**/*.smk")]
             if "DESIGN.md" in p.read_text()]
    assert not cited, cited
    assert "## Design reference" in (ROOT / "README.md").read_text()


def test_the_code_passes_ruff():
    """`ruff check .` with pyproject.toml's rules (the version pinned in the test extra: a newer
    one may add rules)."""
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", str(ROOT)],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stdout + run.stderr

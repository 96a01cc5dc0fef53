"""The layering rules of the design notes, enforced."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold(tmp_path):
    exe = shutil.which("lint-imports")
    assert exe, "import-linter is part of the test extras"
    # import-linter walks a package's folder; ours is assembled from four folders by the
    # package-dir mapping, so lay out a copy the way an installed wheel has it.
    tree = tmp_path / "diptych"
    shutil.copytree(ROOT / "diptych", tree)
    for folder in ("models", "training", "desktop"):
        shutil.copytree(ROOT / folder, tree / folder)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [exe, "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=tmp_path, capture_output=True, text=True, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


def test_core_imports_pull_in_no_heavy_or_gui_library():
    code = (
        "import sys, diptych.models.engine, diptych.models.catalog, diptych.models.adapters, "
        "diptych.training.store, diptych.training.preferences, diptych.training.winrates; "
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'PySide6') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

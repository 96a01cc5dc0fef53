"""The layering rules of the design notes, enforced."""

import ast
import os
import re
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


# The project's folders and the packages they are installed as (pyproject.toml's package-dir).
PACKAGES = {"diptych": "diptych", "models": "diptych.models", "training": "diptych.training",
            "desktop": "diptych.desktop"}


def _project_files():
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [package, *path.relative_to(ROOT / folder).with_suffix("").parts]
            yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_uses(source: str, where: str, module: str, package: str) -> list[str]:
    """Where ``source`` (the module ``module`` of ``package``, in the file ``where``) imports
    a ``_private`` name of another project module, or reads one off a project module or
    name it imported."""
    tree = ast.parse(source)
    imported, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            if not target.startswith("diptych"):
                continue
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{where}:{node.lineno}: from {target} import {alias.name}")
                imported[alias.asname or alias.name] = f"{target}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("diptych"):
                    if any(_private(part) for part in alias.name.split(".")):
                        found.append(f"{where}:{node.lineno}: import {alias.name}")
                    imported[alias.asname or alias.name.partition(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in imported and _private(node.attr)):
            found.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    found = [line for path, module in _project_files()
             for line in _private_uses(path.read_text(encoding="utf-8"), path.relative_to(ROOT),
                                       module, module if path.name == "__init__.py"
                                       else module.rpartition(".")[0])]
    assert not found, "private names used outside their module:\n" + "\n".join(found)


def test_only_the_engine_touches_llama_cpps_handles():
    pattern = re.compile(r"\._(llama|guard|ctx)\b")
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path, _ in _project_files() if path != ROOT / "models" / "engine.py"
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if pattern.search(line)]
    assert not found, "\n".join(found)


def test_the_private_name_check_sees_an_import_and_an_attribute():
    code = ("from .evaluate import _mean\nfrom . import evaluate\nfrom diptych import __version__\n"
            "x = evaluate._completion\ny = evaluate.answers\n")
    found = _private_uses(code, "training/probe.py", "diptych.training.probe", "diptych.training")
    assert found == ["training/probe.py:1: from diptych.training.evaluate import _mean",
                     "training/probe.py:4: evaluate._completion"]

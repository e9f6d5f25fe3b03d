"""What `pip install .` gives: a wheel with every config, a working `xasr` outside the checkout,
and install requirements that cover every package xasr imports."""
from __future__ import annotations

import ast
import configparser
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# imported only where a feature needs them, with an error saying what to install
OPTIONAL = {"opencc": "traditional -> simplified conversion in benchmarks",
            "torchvision": "torchvision:<arch> image encoders"}


def _requirements() -> set:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    names = cfg["options"]["install_requires"].split()
    for group in cfg["options.extras_require"].values() if cfg.has_section("options.extras_require") else []:
        names += group.split()
    return {re.split(r"[<>=!~;\[ ]", n)[0].lower().replace("_", "-") for n in names if n.strip()}


def _imports() -> set:
    mods = set()
    for path in (ROOT / "xasr").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                mods.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m != "xasr"}


def test_every_imported_package_is_an_install_requirement():
    import importlib.metadata as md

    dists = md.packages_distributions()
    required = _requirements()
    missing = []
    for mod in sorted(_imports()):
        if mod in OPTIONAL:
            continue
        names = [d.lower().replace("_", "-") for d in dists.get(mod, [mod])]
        if not any(n in required for n in names):
            missing.append(f"{mod} ({', '.join(names)})")
    assert missing == [], f"imported by xasr but not in setup.cfg's install_requires / extras: {missing}"


@pytest.mark.slow
def test_a_wheel_installs_with_its_configs_and_runs_outside_the_checkout(tmp_path):
    import shutil

    # built from a copy of the source, so that the build leaves nothing in the checkout
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "setup.py", "pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "xasr", src / "xasr", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(dist)],
                   check=True, cwd=tmp_path)
    wheel = next(dist.glob("xasr-*.whl"))
    inside = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.relative_to(ROOT).as_posix() for p in (ROOT / "xasr" / "conf").rglob("*.yaml")}
    assert configs and configs <= inside, sorted(configs - inside)[:5]
    # installed on its own (the dependencies are those of this environment), run from elsewhere
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import xasr; print(xasr.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(target), where  # the installed copy, not the checkout
    shown = subprocess.run([str(target / "bin" / "xasr"), "train", "--show", "experiment=aishell_stage1"], env=env,
                           cwd=tmp_path, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "stage: 1" in shown.stdout and "whisper" in shown.stdout
    help_ = subprocess.run([str(target / "bin" / "xasr"), "serve", "--help"], env=env, cwd=tmp_path,
                           capture_output=True, text=True)
    assert help_.returncode == 0 and "/v1/audio/transcriptions" in help_.stdout

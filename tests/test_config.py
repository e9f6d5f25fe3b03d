"""The experiment configs ship inside the package: every file under xasr/conf is package data,
so a `pip install .` (not only an editable checkout) can compose the experiments."""
from __future__ import annotations

import configparser
import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_config_file_is_package_data():
    from xasr.config import CONF_DIR

    assert CONF_DIR == ROOT / "xasr" / "conf" and (CONF_DIR / "config.yaml").is_file()
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["xasr"].split(",")]
    files = [p.relative_to(ROOT / "xasr").as_posix() for p in CONF_DIR.rglob("*") if p.is_file()]
    assert len(files) > 20
    assert [f for f in files if not any(fnmatch.fnmatch(f, pat) and f.count("/") == pat.count("/")
                                        for pat in patterns)] == []


def test_an_experiment_composes_from_the_package_configs():
    from xasr.config import load_experiment

    cfg = load_experiment(["experiment=aishell_stage1"])
    assert cfg.train.stage == 1 and cfg.model.context.enabled

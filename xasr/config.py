"""Experiment configuration: hydra structured configs (dataclasses) composed from conf/ YAML groups.

In: overrides such as ``["experiment=aishell_stage1", "train.exp_dir=exp/stage1"]`` (hydra syntax)
or a saved ``config.yaml``. Out: an OmegaConf object typed by :class:`ExperimentConfig`.

conf/ groups: encoder/ (-> model.encoder), cformer/ (-> model.cformer), llm/ (-> model.llm),
data/, optim/, experiment/ (one file per reported result, package _global_).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from omegaconf import OmegaConf

from xasr.data.dataset import DataConfig
from xasr.models.model import ModelConfig

CONF_DIR = Path(__file__).resolve().parent / "conf"  # package data (setup.cfg), so pip installs carry it


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 100
    scheduler: str = "cosine"  # "cosine" (to min_lr_ratio * lr) or "constant", after linear warm-up
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    accum_grad: int = 1
    # the encoder's trained parameters learn at lr x this (pretrained layers adapted with
    # model.encoder.whisper.train_top want a gentler rate than the heads trained from scratch)
    encoder_lr_scale: float = 1.0


@dataclass
class TrainConfig:
    stage: int = 1  # 1: encoder + C-Former on ASR; 2: adapter through the frozen LLM; 3: multimodal
    exp_dir: str = "exp/stage1"
    init_from: Optional[str] = None  # a previous stage's model directory
    trainable: List[str] = field(default_factory=lambda: ["encoder", "ctc", "cformer"])
    num_epochs: int = 10
    max_steps: int = 0  # 0: no limit; the schedule then spans num_epochs
    max_minutes: float = 0.0  # 0: no limit; a time budget that ends training after a checkpoint
    log_interval: int = 10
    save_interval: int = 100  # steps between checkpoints (and one at every epoch end)
    keep_last: int = 3
    average_last: int = 1  # the final model averages the last N checkpoints ...
    select_by: str = "last"  # ... or, with "valid", the N of lowest validation loss (epoch ends)
    # with "valid": only those within this fraction of the lowest loss (an epoch end far back in a
    # short run is a worse model, and averaging with it cost 2.7 points of dev CER: RESULTS.md)
    average_within: float = 0.05
    valid_max_batches: int = 0  # 0: the whole validation set
    seed: int = 42
    dtype: str = "float32"  # "bfloat16" for autocast on GPUs
    device: str = "auto"  # "auto", "cpu", "cuda"
    num_threads: int = 0  # torch threads per process; 0: torch's default
    tensorboard: bool = True
    max_bad_steps: int = 5  # updates in a row with a non-finite loss or gradient (each skipped) that stop the run


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    models_dir: Optional[str] = None  # where `xasr models install` put the pretrained models


def load_experiment(overrides: Sequence[str] = (), config_dir: Optional[str] = None,
                    config_name: str = "config"):
    """Compose conf/config.yaml with hydra overrides and check it against the schema."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore

    # the schema is the first default of conf/config.yaml: every key can be overridden
    ConfigStore.instance().store(name="xasr_schema", node=ExperimentConfig)
    conf = Path(config_dir) if config_dir else CONF_DIR
    with initialize_config_dir(version_base=None, config_dir=str(conf.resolve())):
        composed = compose(config_name=config_name, overrides=list(overrides))
    cfg = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), composed)
    OmegaConf.resolve(cfg)
    return cfg


def experiment_from_yaml(path) -> "ExperimentConfig":
    return OmegaConf.merge(OmegaConf.structured(ExperimentConfig), OmegaConf.load(path))

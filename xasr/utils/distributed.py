"""The process's place in a torchrun launch and its device.

In: torchrun's environment (WORLD_SIZE, LOCAL_RANK) and a device name (auto, cpu or cuda).
Out: the torch device of this process, the process group joined (gloo on CPUs, NCCL on GPUs)
when there are several processes, and (world size, rank).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from xasr.errors import XasrError


def dist_info():
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def setup_distributed(device: torch.device) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # collectives and barriers use this process's GPU
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise XasrError("train.device=cuda, but torch sees no CUDA device here (use cpu or auto)")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if name != "cpu":
        raise XasrError(f"train.device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)

"""Training state without pickle: a round trip of what the trainer stores, and refusals."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from xasr.errors import XasrError
from xasr.utils.state_io import STRUCTURE, TENSORS, load_state, save_state


def test_optimizer_scheduler_and_rng_states_round_trip(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": 7, "metrics": [{"loss": 1.5}],
             "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                     "cuda": None}}
    save_state(tmp_path, state)
    back = load_state(tmp_path)
    assert back["step"] == 7 and back["metrics"] == [{"loss": 1.5}]
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    opt2.load_state_dict(back["optimizer"])  # integer parameter keys survive
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    # the RNG states restore: the same draws follow
    random.setstate(back["rng"]["python"])
    np.random.set_state(back["rng"]["numpy"])
    torch.set_rng_state(back["rng"]["torch"])
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    assert draws == (random.random(), np.random.rand(), torch.rand(1).item())


def test_objects_that_would_need_pickle_are_refused(tmp_path):
    with pytest.raises(XasrError, match="Linear at /model cannot be stored"):
        save_state(tmp_path, {"model": torch.nn.Linear(1, 1)})


def test_damaged_or_missing_files_are_named(tmp_path):
    save_state(tmp_path, {"x": torch.ones(3)})
    (tmp_path / TENSORS).write_bytes((tmp_path / TENSORS).read_bytes()[:20])
    with pytest.raises(XasrError, match="state.safetensors is damaged"):
        load_state(tmp_path)
    (tmp_path / STRUCTURE).unlink()
    with pytest.raises(XasrError, match="state.json is missing"):
        load_state(tmp_path)

"""Training state (optimizer, scheduler, RNG states, counters, metrics) stored without pickle.

In: a nested structure of dicts (string or integer keys), lists, tuples, numbers, strings, None,
torch tensors and numpy arrays. Out: two files, ``state.safetensors`` (every tensor and array)
and ``state.json`` (the structure, with each tensor replaced by its key). Loading them runs no
code from the files: a checkpoint from someone else is data, never a program. Anything else in
the structure is refused when saving, with its path named.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

from xasr.errors import XasrError

TENSORS = "state.safetensors"
STRUCTURE = "state.json"


def _flatten(obj: Any, path: str, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": path}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise XasrError(f"training state: key {k!r} at {path or '/'} is neither a string nor an integer")
            items.append([k, _flatten(v, f"{path}/{k}", tensors)])
        return {"__dict__": items}
    if isinstance(obj, (list, tuple)):
        kind = "__list__" if isinstance(obj, list) else "__tuple__"
        return {kind: [_flatten(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise XasrError(f"training state: {type(obj).__name__} at {path or '/'} cannot be stored without pickle")


def _unflatten(obj: Any, tensors: Dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(obj, dict):
        if len(obj) != 1:
            raise XasrError(f"{where}: unexpected object {str(obj)[:80]}")
        (kind, value), = obj.items()
        if kind in ("__tensor__", "__ndarray__"):
            if value not in tensors:
                raise XasrError(f"{where}: tensor {value!r} is missing from {TENSORS}")
            return tensors[value] if kind == "__tensor__" else tensors[value].numpy()
        if kind == "__dict__":
            return {k: _unflatten(v, tensors, where) for k, v in value}
        if kind == "__list__":
            return [_unflatten(v, tensors, where) for v in value]
        if kind == "__tuple__":
            return tuple(_unflatten(v, tensors, where) for v in value)
        raise XasrError(f"{where}: unknown entry {kind!r}")
    return obj


def save_state(directory: Union[str, Path], state: Any) -> None:
    from safetensors.torch import save_file

    d = Path(directory)
    tensors: Dict[str, torch.Tensor] = {}
    structure = _flatten(state, "", tensors)
    save_file(tensors, str(d / TENSORS))
    (d / STRUCTURE).write_text(json.dumps(structure))


def load_state(directory: Union[str, Path]) -> Any:
    """The state :func:`save_state` wrote; a missing, truncated or damaged file raises an
    :class:`XasrError` naming it."""
    from safetensors.torch import load_file

    d = Path(directory)
    for name in (TENSORS, STRUCTURE):
        if not (d / name).is_file():
            raise XasrError(f"{d / name} is missing (not a complete checkpoint)")
    try:
        tensors = load_file(str(d / TENSORS))
    except Exception as e:  # safetensors raises its own error types for damaged headers and data
        raise XasrError(f"{d / TENSORS} is damaged ({e})") from e
    try:
        structure = json.loads((d / STRUCTURE).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise XasrError(f"{d / STRUCTURE} is damaged ({e})") from e
    return _unflatten(structure, tensors, str(d / STRUCTURE))

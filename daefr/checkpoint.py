"""Read and write DAEFR weights: the official Lightning ``.ckpt``, plain state_dicts and
safetensors. Every path into the model goes through ``load_model`` / ``load_weights_into``,
which are strict and name what is wrong.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from daefr.atomic import atomic_path
from daefr.config import DAEFRConfig
from daefr.model import DAEFR, TRAINING_ONLY_PREFIXES
from daefr.ops import Impl
from daefr.safe_unpickle import RefusedGlobal, restricted_torch_load

log = logging.getLogger(__name__)

MAX_LISTED_KEYS = 8


class CheckpointError(ValueError):
    """A weights file that cannot be used; the message names the file and the reason."""


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = len(keys) - MAX_LISTED_KEYS
    return shown + (f" (+{more} more)" if more > 0 else "")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: ``.safetensors``, a Lightning ``.ckpt`` (weights under
    ``"state_dict"``), or a plain ``torch.save``d state_dict. Never runs pickled code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    obj = _torch_load(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: holds no state_dict (found {type(obj).__name__})")
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: entries that are not tensors: {_listing(not_tensors)}")
    return {str(k): v for k, v in obj.items()}


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as strict_err:
        log.info("%s: weights_only load refused (%s); trying the restricted unpickler", path, strict_err)
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    try:
        return restricted_torch_load(str(path))
    except RefusedGlobal as err:
        raise CheckpointError(f"{path}: refused, {err}") from err
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from err


def load_weights_into(model: DAEFR, state: Mapping[str, torch.Tensor], source: str = "state_dict") -> None:
    """Strictly load official-layout weights. Training-only tensors are dropped when the model
    was built without ``training_modules``; anything else missing, unexpected or mis-shaped
    is a ``CheckpointError`` that lists the keys.
    """
    expected = model.state_dict()
    if not model.config.training_modules:
        state = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {_listing(unexpected)}")
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped: {_listing(misshaped)}")
    if problems:
        raise CheckpointError(f"{source}: does not match the DAEFR model; " + "; ".join(problems))
    dtype = next(iter(expected.values())).dtype
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)


def load_model(
    path: str | Path,
    config: DAEFRConfig | str = "official",
    impl: Impl = "torch",
    device: str | torch.device = "cpu",
) -> DAEFR:
    """Build a DAEFR for ``config`` (or a preset name), load ``path`` into it, eval mode."""
    if isinstance(config, str):
        config = DAEFRConfig.from_name(config)
    model = DAEFR(config, impl=impl)
    load_weights_into(model, read_state_dict(path), source=str(path))
    return model.eval().to(device)


def save_safetensors(model: DAEFR, path: str | Path, half: bool = False) -> int:
    """Write the model's inference tensors (703 for the official preset); returns the count."""
    from safetensors.torch import save_file

    state = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith(TRAINING_ONLY_PREFIXES)
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "daefr", "dtype": "float16" if half else "float32"})
    return len(state)

"""Read and write DAEFR weights: the official Lightning ``.ckpt``, plain state_dicts and
safetensors. Every path into the model goes through ``load_model`` / ``load_weights_into``,
which are strict and name what is wrong.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from daefr.atomic import atomic_path
from daefr.config import DAEFRConfig
from daefr.model import DAEFR, TRAINING_ONLY_PREFIXES
from daefr.ops import Impl
from daefr.safe_unpickle import RefusedGlobal, UnsupportedTensor, restricted_torch_load

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

    Every way a file can be unusable is a ``CheckpointError`` naming the file (and the key
    where there is one): not a regular file, malformed or truncated, a refused global, an entry
    that is not a dense tensor, or a floating-point tensor holding NaN or Inf.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        state = _state_dict_of(path, read_torch_file(path))
    _check_finite(path, state)
    return state


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError, MemoryError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_one_line(err)})") from err


def _state_dict_of(path: Path, obj: object) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: holds no state_dict (found {type(obj).__name__})")
    not_names = [repr(k)[:40] for k in obj if not isinstance(k, str)]
    if not_names:
        raise CheckpointError(f"{path}: state_dict keys that are not names: {_listing(not_names)}")
    unsupported = [f"{k} ({v.kind})" for k, v in obj.items() if isinstance(v, UnsupportedTensor)]
    if unsupported:
        raise CheckpointError(
            f"{path}: tensors of a kind DAEFR weights never are: {_listing(unsupported)}; "
            "save dense CPU tensors (tensor.to_dense().cpu())"
        )
    not_tensors = [f"{k} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: entries that are not tensors: {_listing(not_tensors)}")
    not_dense = [f"{k} ({v.layout})" for k, v in obj.items() if v.layout != torch.strided]
    if not_dense:
        raise CheckpointError(f"{path}: tensors that are not dense: {_listing(not_dense)}")
    return dict(obj)


def _check_finite(source: Path | str, state: Mapping[str, torch.Tensor]) -> None:
    bad = [
        k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(_checkable(v)).all())
    ]
    if bad:
        raise CheckpointError(
            f"{source}: {len(bad)} tensors hold NaN or Inf: {_listing(bad)}; "
            "the checkpoint is damaged (or came from a diverged training run)"
        )


def _checkable(v: torch.Tensor) -> torch.Tensor:
    """isfinite runs on the common float dtypes as they are; float8 and others go through fp32."""
    return v if v.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) else v.float()


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def read_torch_file(path: Path) -> object:
    """Unpickle a torch file without running code (``daefr.safe_unpickle``); any failure is one
    ``CheckpointError`` line naming the file. Shared by weights and training checkpoints."""
    try:
        with warnings.catch_warnings(record=True) as said:  # torch's warnings on odd files: debug log only
            warnings.simplefilter("always")
            try:
                return restricted_torch_load(str(path))
            finally:
                for w in said:
                    log.debug("%s: %s", path, w.message)
    except RefusedGlobal as err:
        raise CheckpointError(f"{path}: refused, {err}") from err
    except Exception as err:  # noqa: BLE001 - a malformed file may fail anywhere in torch's reader
        # Malformed pickles raise whatever the unpickler or torch's zip reader trips over
        # (KeyError for an odd persistent id, struct.error, TypeError...): all of them mean
        # the same to the user, and none of them ran code.
        kind = type(err).__name__
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({kind}: {_one_line(err)})"
        ) from err


def load_weights_into(model: DAEFR, state: Mapping[str, torch.Tensor], source: str = "state_dict") -> None:
    """Strictly load official-layout weights. Training-only tensors are dropped when the model
    was built without ``training_modules``; anything else missing, unexpected, mis-shaped, of
    the wrong kind of dtype (integer, bool or complex where the model has floats) or not finite
    in the model's dtype is a ``CheckpointError`` that lists the keys.
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
    wrong_kind = [
        f"{k} ({state[k].dtype})"
        for k, v in expected.items()
        if k in state and (state[k].is_floating_point() != v.is_floating_point() or state[k].is_complex())
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {_listing(unexpected)}")
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped: {_listing(misshaped)}")
    if wrong_kind:
        problems.append(f"{len(wrong_kind)} not floating-point: {_listing(wrong_kind)}")
    if problems:
        raise CheckpointError(f"{source}: does not match the DAEFR model; " + "; ".join(problems))
    converted = {k: v.to(expected[k].dtype) for k, v in state.items()}
    overflow = [
        k for k, v in converted.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if overflow:
        raise CheckpointError(
            f"{source}: {len(overflow)} tensors are not finite in {next(iter(expected.values())).dtype}: "
            f"{_listing(overflow)} (NaN/Inf, or values beyond the dtype's range)"
        )
    model.load_state_dict(converted, strict=True)


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
    if half:  # a weight beyond fp16's range would be saved as Inf
        _check_finite(f"{path} (float16)", state)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "daefr", "dtype": "float16" if half else "float32"})
    return len(state)

"""Restorer construction from a ``PrecisionPlan``: resolve ``auto``, load what the chosen
backend builds from, create it. The CLIs parse flags into a plan and ``Sources`` and call this."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from daefr.model import DAEFR
from daefr.runtime.auto import Sources, resolve
from daefr.runtime.backends import Restorer, create_restorer
from daefr.runtime.plan import PrecisionPlan

log = logging.getLogger(__name__)


def open_restorer(
    plan: PrecisionPlan, sources: Sources, load_model: Callable[[], DAEFR], workdir: Path
) -> tuple[Restorer, PrecisionPlan]:
    """(the restorer, the resolved plan). ``load_model`` is called only when the chosen backend
    needs the weights (torch, or ort/openvino exporting an ONNX into ``workdir``)."""
    resolved, why = resolve(plan, sources)
    log.info("%s", why)
    needs_model = resolved.backend == "torch" or (resolved.backend in ("ort", "openvino") and sources.onnx is None)
    model = load_model() if needs_model else None
    restorer = create_restorer(
        resolved, model=model, onnx=sources.onnx, engine_dir=sources.engine_dir, workdir=workdir
    )
    return restorer, resolved

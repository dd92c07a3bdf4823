"""The course's library: the generated world, the course model and each chapter's tools.

``from utils import load_model, load_tokenizer`` is how every notebook gets its model.
Submodules are imported on first use, so ``import utils.world`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY_EXPORTS = {
    "load_model": "utils.models",
    "load_tokenizer": "utils.models",
    "COURSE_MODEL_DIR": "utils.models",
}

__all__ = ["__version__", *_LAZY_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _LAZY_EXPORTS:
        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'utils' has no attribute {name!r}")

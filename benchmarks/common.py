"""What every benchmark script shares: the random-weight SAM it times and how figures are saved.

Speed does not depend on the weights' values, so benchmarks build Meta's architectures with
random weights (no checkpoint download)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from segment_anything import sam_model_registry


def random_sam(model: str) -> torch.nn.Module:
    """Meta's SAM (vit_b/l/h) or MobileSAM (vit_t) with random weights, in eval mode."""
    if model == "vit_t":
        try:
            from mobile_sam import sam_model_registry as mobile_registry
        except ImportError as exc:
            raise SystemExit("vit_t needs MobileSAM: pip install 'sam-inspect[mobile]'") from exc
        return mobile_registry["vit_t"]().eval()
    return sam_model_registry[model]().eval()


def write_json(path: Path | None, figures: dict) -> None:
    """Save a benchmark's figures (when --json PATH was given) and say where."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures written to {path}")

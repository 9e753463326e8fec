"""What a batch job was asked to do (BatchConfig) and the settings digest the ledger keys on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sam_engine.auto_masks import AutoMaskSettings

# Bump when a change to the batch code changes its results: every image is then redone.
BATCH_FORMAT_VERSION = 1


@dataclass
class BatchConfig:
    """Options of `sam-inspect batch` (the CLI maps its flags onto these one to one)."""

    input: Path
    out: Path
    exclude: tuple[str, ...] = ()  # globs of relative paths to leave out, e.g. "gt/*"
    recipe: Path | None = None
    prompts: Path | None = None  # folder of per-image prompt files, or a COCO file
    auto: bool = False
    auto_settings: AutoMaskSettings = field(default_factory=AutoMaskSettings)
    auto_class: str = "defect"  # class name of automatic masks
    find: tuple[str, ...] | None = None  # zero-click: these classes (() = the recipe's)
    finder: str | None = None  # the models --find uses (None: the recipe's promoted ones)
    examples: str | None = None
    golden: str | None = None
    engine: str = "auto"  # "auto" prefers the model promoted for the recipe's part name
    model: str | None = None  # SAM id, or learned-base / NAME[@VERSION] / folder (learned)
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None  # expected sha256 of a custom checkpoint
    allow_unverified: bool = False  # use a checkpoint whose sha256 differs (recorded unverified)
    device: str | None = None
    precision: str = "auto"
    mm_per_px: float | None = None  # overrides the recipe's calibration
    force: bool = False
    quiet: bool = False
    overlays: bool = False
    coco_polygons: bool = False  # coco.json with polygon masks instead of RLE (Label Studio)
    report: str | None = None  # "md", "html" or "pdf": a written report per image in OUT/reports
    db: str | None = None  # store URL or file; None: OUT/inspections.db
    no_store: bool = False
    lot: str = ""
    station: str = ""
    operator: str = "batch"
    loaders: int = 2  # CPU threads decoding and preparing images
    queue_size: int = 4  # prepared images waiting for the encoder, at most
    finishers: int | None = None  # measuring/writing threads; None: 1 on a CPU, more on a GPU
    batch_size: int | None = None  # images per encoder call; None: 4 on a GPU, else 1
    ray: str | None = None  # Ray address; "local" starts or joins a local Ray
    ray_actors: int | None = None
    ray_gpus_per_actor: float | None = None


def settings_digest(config: BatchConfig, engine_id: dict, recipe_text: str | None,
                    source: dict) -> str:
    """Digest of everything besides the image and its prompt file that decides the results."""
    settings = {
        "format": BATCH_FORMAT_VERSION,
        "engine": engine_id,
        "recipe": None if recipe_text is None else hashlib.sha256(recipe_text.encode()).hexdigest(),
        "source": source,
        "auto": asdict(config.auto_settings) if config.auto else None,
        "auto_class": config.auto_class if config.auto else None,
        "mm_per_px": config.mm_per_px,
        "inspection": [config.lot, config.station, config.operator],
    }
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def image_key(content_digest: str, settings: str, prompt_digest: str) -> str:
    """The ledger key of one image: its bytes, the job's settings and its prompts."""
    h = hashlib.blake2b(digest_size=16)
    for part in (content_digest, settings, prompt_digest):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """blake2b of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


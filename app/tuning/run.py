"""One tuning run: split, measure the current engine, train, measure again, gate, register.

The held-out share of the images (by group hash, never trained on) measures everything: the
engine in use now, box-fill, and the tuned model, per class, for box and click prompts. The
tuned model is written to the registry whatever happens; it is promoted for the recipe only
when its held-out mean IoU (box and click averaged) beats the current engine's by `margin`,
and the outcome says why it was or was not.

Two model families, one pipeline: the learned crop model (base: learned-base or a tuned
model) and SAM checkpoints (base: a SAM id such as vit_b, or a checkpoint file with
base_checkpoint). A SAM base is loaded with load_sam_checked (its sha256 computed and
checked), tuned with sam_tune (decoder, or LoRA on the encoder) and stored as a delta to it:
`<name>/<version>/delta.safetensors` + delta.json + manifest.json (net.kind "sam-delta",
weights_sha256 = the delta's sha256, base = the SAM id, base_sha256 = the checkpoint's).
Both families are measured the same way (SamEngine, or LearnedEngine, through
heldout.evaluate), so the gate compares like with like.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from sam_engine.engine import Engine
from sam_engine.errors import SamEngineError
from sam_engine.learned import registry
from sam_engine.learned.data import Dataset, TrainImage, split
from sam_engine.learned.engine import LearnedEngine, load_model
from sam_engine.learned.heldout import HeldOut, evaluate
from sam_engine.learned.sam_tune import SamTuneSettings, tune_sam_decoder
from sam_engine.learned.train import TrainSettings, train
from sam_engine.learned.weights import (
    MANIFEST_NAME,
    ModelManifest,
    read_manifest,
    save_model,
    write_atomic,
)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class TuneRequest:
    """What to tune: data, starting model, settings, gate and where the result goes."""

    data: Dataset
    name: str
    recipe: str = ""  # the recipe's part name the promotion applies to ("" = default)
    base: str = registry.BASE_NAME
    held_out: float = 0.2
    salt: str = ""
    margin: float = 0.0
    settings: TrainSettings = TrainSettings()
    curve: tuple[int, ...] = ()  # also train on the first N masks, for a learning curve
    checkpoint_dir: Path | None = None
    root: Path | None = None  # registry root (default: registry.registry_root())
    # SAM tuning (is_sam_request): base names the SAM model id (vit_b, ...); base_checkpoint
    # a checkpoint file of that architecture (default: the installed one); sam_settings the
    # sam_tune settings (steps, lr, seed, lora, device, ...; `settings` is then unused)
    base_checkpoint: Path | None = None
    sam_settings: SamTuneSettings | None = None


@dataclass
class TuneOutcome:
    manifest: ModelManifest
    folder: Path
    before: HeldOut
    after: HeldOut
    current: str  # the engine it was compared with
    promoted: bool
    reason: str
    curve: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    rivals: dict[str, HeldOut] = field(default_factory=dict)  # other engines auto could use


def score(h: HeldOut) -> float:
    """The gate's figure: mean of box and click mean IoU on the held-out instances."""
    return (h.mean("box") + h.mean("point")) / 2


def curve_steps(steps: int, n_masks: int) -> int:
    """Training steps of a learning-curve point: two per mask (about 50 simulated prompts per
    mask at batch 24), at least 60, at most the full run's."""
    return min(steps, max(60, 2 * n_masks))


def _subset(images: list[TrainImage], n_masks: int) -> list[TrainImage]:
    """The first images (in digest order, so reproducible) holding about n_masks instances."""
    out, total = [], 0
    for im in sorted(images, key=lambda t: t.digest):
        if total >= n_masks:
            break
        out.append(im)
        total += len(im.instances)
    return out


def load_registered(folder: Path, device: str | None = None) -> Engine:
    """The engine of a registry folder, as `--engine learned --model FOLDER` loads it:
    LearnedEngine, or SamEngine for a tuned SAM checkpoint (memory cache only)."""
    from sam_engine.embedding_cache import EmbeddingCache
    from sam_engine.factory import load_engine

    return load_engine("learned", model=str(folder), device=device, cache=EmbeddingCache(),
                       disk_cache=False)


def current_engine(recipe: str, root: Path | None,
                   base: str = registry.BASE_NAME) -> tuple[Engine, str]:
    """The model this recipe uses now: its promoted model (a learned model or a tuned SAM
    checkpoint), else the learned base `base`."""
    p = registry.promoted_for(recipe, root)
    spec = p.model_id if p is not None else base
    return load_registered(registry.resolve(spec, root)), spec


def is_sam_base(base: str, base_checkpoint: Path | None = None) -> bool:
    """True when tuning starts from a SAM checkpoint: base a SAM id, or a checkpoint file."""
    from sam_engine.factory import model_kind
    from sam_engine.weights.checkpoint import KNOWN_ARCHES

    return base_checkpoint is not None or base in KNOWN_ARCHES or model_kind(base) == "sam"


def is_sam_request(req: TuneRequest) -> bool:
    """True when the request tunes a SAM checkpoint (is_sam_base)."""
    return is_sam_base(req.base, req.base_checkpoint)


def _split(req: TuneRequest) -> tuple[list[TrainImage], list[TrainImage], int]:
    train_set, held = split(req.data.images, req.held_out, req.salt)
    if not train_set:
        raise SamEngineError(f"all {len(req.data.images)} images fell in the held-out share; "
                             "give more images or a smaller --held-out")
    if not held:
        raise SamEngineError(f"no image fell in the held-out share ({req.held_out:.0%} of "
                             f"{len(req.data.images)}); give more images")
    n_train = sum(len(i.instances) for i in train_set)
    log.info("split: %d images (%d masks) to train, %d held out", len(train_set), n_train,
             len(held))
    return train_set, held, n_train


def _data_record(req: TuneRequest, train_set: list[TrainImage], held: list[TrainImage],
                 digest: str) -> tuple[dict, dict]:
    """The manifest's data and split fields (digest: req.data.digest(), computed once)."""
    data = {"source": req.data.source, "digest": digest,
            "images": len(req.data.images), "instances": req.data.n_instances,
            "classes": req.data.classes()}
    sides = {"held_out": req.held_out, "salt": req.salt,
             "train_images": sorted(i.digest for i in train_set),
             "held_out_images": sorted(i.digest for i in held)}
    return data, sides


def rivals(held: list[TrainImage], skip: set[str], progress: bool,
           include_sam: bool = True) -> dict[str, HeldOut]:
    """The held-out figures of the engines `--engine auto` falls back to without a promoted
    model: the classic engine always (it is cheap), SAM when a checkpoint is installed (unless
    include_sam is False: a tuned SAM is already compared with its base). A promoted model
    replaces them for its recipe, so it has to beat them too."""
    from sam_engine.classic import ClassicEngine
    from sam_engine.factory import load_engine

    out = {"classic": evaluate(ClassicEngine(), held, progress=progress,
                               desc="held-out classic")}
    if not include_sam:
        return out
    try:
        fallback = load_engine("auto")
    except SamEngineError as exc:  # a damaged checkpoint: say so, gate on the rest
        log.warning("the engine auto would use cannot be measured: %s", exc)
        return out
    if fallback.info.name == "sam" and fallback.info.model_id not in skip:
        out[f"sam {fallback.info.model_id}"] = evaluate(
            fallback, held, progress=progress, desc=f"held-out SAM {fallback.info.model_id}")
    return out


def _gate(req: TuneRequest, before: HeldOut, after: HeldOut, cur_name: str,
          others: dict[str, HeldOut] | None = None) -> tuple[bool, str, float]:
    """Promote when the tuned model beats the best of the current model and its rivals."""
    field_ = {cur_name: before, **(others or {})}
    best = max(field_, key=lambda k: score(field_[k]))
    gain = score(after) - score(field_[best])
    promoted = gain > req.margin
    also = f" (best of {', '.join(field_)})" if len(field_) > 1 else ""
    reason = (f"held-out mean IoU (box + click) {score(after):.3f} vs "
              f"{score(field_[best]):.3f} for {best}{also}: {'+' if gain >= 0 else ''}"
              f"{gain:.3f}, {'above' if promoted else 'not above'} the margin "
              f"{req.margin:.3f}")
    return promoted, reason, gain


def tune(req: TuneRequest, *, progress: bool = True,
         on_step: Callable[[int, int], None] | None = None) -> TuneOutcome:
    """Split, measure, train, gate, register; on_step(step, total) after each step of the
    final training; an exception it raises stops the run (with checkpoint_dir set, the last
    checkpoint written, every settings.checkpoint_every steps, lets the same request resume).
    A SAM base (is_sam_request) takes the same steps with sam_tune (tune_sam)."""
    if is_sam_request(req):
        return tune_sam(req, progress=progress, on_step=on_step)
    train_set, held, n_train = _split(req)
    base_folder = registry.resolve(req.base, req.root)
    if registry.is_sam_delta(base_folder):
        raise SamEngineError(
            f"{req.base} is a tuned SAM checkpoint, which is not tuned further: tune its base "
            f"again on all the masks (--base {read_manifest(base_folder).base})")
    cur_engine, cur_name = current_engine(req.recipe, req.root, req.base)
    before = evaluate(cur_engine, held, progress=progress, desc=f"held-out {cur_name}")
    others = rivals(held, {cur_name}, progress)
    model, base_manifest = load_model(base_folder)

    curve = []
    for n in req.curve:
        if n >= n_train:
            break
        sub = _subset(train_set, n)
        m, _ = load_model(base_folder)
        short = replace(req.settings, steps=curve_steps(req.settings.steps, n))
        train(m, sub, short, progress=progress, desc=f"curve {n} masks")
        h = evaluate(LearnedEngine(m, base_manifest), held, desc=f"held-out after {n}")
        curve.append({"masks": sum(len(i.instances) for i in sub), "box": h.mean("box"),
                      "point": h.mean("point")})

    digest = req.data.digest()  # every mask's bytes: once per run
    ck = None
    if req.checkpoint_dir is not None:
        ck = Path(req.checkpoint_dir) / f"{req.name}.{digest[:12]}.ckpt"
    t0 = time.perf_counter()
    step_cb = None if on_step is None else (lambda step, _loss: on_step(step, req.settings.steps))
    report = train(model, train_set, req.settings, checkpoint=ck,
                   data_digest=digest, progress=progress, on_step=step_cb,
                   desc=f"tune {req.name}")
    seconds = time.perf_counter() - t0
    version = registry.next_version(req.name, req.root)
    data, sides = _data_record(req, train_set, held, digest)
    manifest = ModelManifest(
        name=req.name, version=version, net=model.config.to_dict(),
        base=base_manifest.model_id, base_sha256=base_manifest.weights_sha256,
        data=data, split=sides, settings=req.settings.to_dict(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    tuned = LearnedEngine(model, manifest)
    after = evaluate(tuned, held, progress=progress, desc=f"held-out {req.name}")
    curve.append({"masks": n_train, "box": after.mean("box"), "point": after.mean("point")})
    promoted, reason, gain = _gate(req, before, after, cur_name, others)
    manifest.metrics = {"held_out": after.table(), "current": {"model": cur_name,
                        "held_out": before.table()},
                        "rivals": {k: v.table() for k, v in others.items()},
                        "gate": {"promoted": promoted,
                        "margin": req.margin, "gain": round(gain, 4), "reason": reason},
                        "curve": curve, "train_seconds": round(report.seconds, 1),
                        "steps": report.steps}
    folder = registry.model_dir(req.name, version, req.root)
    save_model(folder, model.state_dict(), manifest)
    if promoted:
        registry.promote(req.recipe, manifest, reason, req.root)
    if ck is not None:
        ck.unlink(missing_ok=True)
    return TuneOutcome(manifest, folder, before, after, cur_name, promoted, reason, curve,
                       seconds, list(req.data.problems), others)


# ------------------------------------------------------------------ SAM checkpoints
def _sam_held_out(sam, held: list[TrainImage], key: tuple[str, str | None], cache,
                  device: str | None, progress: bool, desc: str) -> HeldOut:
    """heldout.evaluate of a SamEngine on `sam` (no ONNX click decoder, no warm-up). key: the
    (model id, sha256) its embedding cache keys are made of; the tuned SAM's modules are put
    back on the CPU afterwards."""
    import torch

    from sam_engine.sam.backend import SamEngine

    eng = SamEngine(sam, key[0], device=device, cache=cache, checkpoint_sha256=key[1],
                    click_onnx=False, warmup=False)
    try:
        return evaluate(eng, held, progress=progress, desc=desc)
    finally:
        del eng
        sam.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _sam_tensors(sam, names) -> dict:
    sd = sam.state_dict()
    return {n: sd[n].detach().clone() for n in names if n in sd}


def _put_back(sam, saved: dict) -> None:
    import torch

    sd = sam.state_dict()
    with torch.no_grad():
        for n, t in saved.items():
            sd[n].copy_(t)


def _sam_current(req: TuneRequest, sam, base_id: str, base_sha: str, held: list[TrainImage],
                 cache, device: str | None, progress: bool) -> tuple[HeldOut, str, list[str]]:
    """(held-out figures, name, problems) of the engine the recipe uses now: its promoted
    model (a tuned SAM checkpoint of this base is applied to `sam` for the measurement and
    taken off again; another promoted model is loaded as it is used), else the base SAM."""
    from sam_engine.embedding_cache import EmbeddingCache
    from sam_engine.errors import CheckpointError
    from sam_engine.learned.sam_tune import apply_sam_delta, read_delta_manifest

    base_key = (base_id, base_sha)
    p = registry.promoted_for(req.recipe, req.root)
    if p is None:
        return _sam_held_out(sam, held, base_key, cache, device, progress,
                             f"held-out {base_id}"), base_id, []
    folder = registry.resolve(p.model_id, req.root)
    if registry.is_sam_delta(folder):
        m = read_manifest(folder)
        if m.base_sha256 == base_sha:
            delta_path = folder / str(m.net.get("delta_file") or registry.DELTA_NAME)
            names = list(read_delta_manifest(delta_path).get("tensors", {}))
            saved = _sam_tensors(sam, names)
            try:
                apply_sam_delta(sam, delta_path, base_sha)
                encoder = any(n.startswith("image_encoder.") for n in names)
                key = (p.model_id, m.weights_sha256) if encoder else base_key
                h = _sam_held_out(sam, held, key, EmbeddingCache() if encoder else cache,
                                  device, progress, f"held-out {p.model_id}")
            finally:
                _put_back(sam, saved)
            return h, p.model_id, []
    try:
        eng = load_registered(folder, device)
    except CheckpointError as exc:
        why = (f"the promoted model {p.model_id} cannot be loaded ({exc}); compared with the "
               f"base {base_id} instead")
        log.warning("%s", why)
        return _sam_held_out(sam, held, base_key, cache, device, progress,
                             f"held-out {base_id}"), base_id, [why]
    return evaluate(eng, held, progress=progress, desc=f"held-out {p.model_id}"), \
        p.model_id, []


def tune_sam(req: TuneRequest, *, progress: bool = True,
             on_step: Callable[[int, int], None] | None = None) -> TuneOutcome:
    """tune() for a SAM base: load it (load_sam_checked: sha256 computed, checked against the
    manifest or an expected value), split, measure the current engine, tune (sam_tune, with a
    resumable checkpoint under checkpoint_dir), measure the tuned model, write its delta and
    manifest to the registry and promote it when it beats the current engine by the margin."""
    from sam_engine.embedding_cache import EmbeddingCache
    from sam_engine.learned.sam_tune import delta_names, save_sam_delta
    from sam_engine.weights.checkpoint import load_sam_checked

    s = req.sam_settings or SamTuneSettings()
    train_set, held, n_train = _split(req)
    loaded = load_sam_checked(req.base, req.base_checkpoint)
    sam, check = loaded.model, loaded.check
    base_id, base_sha = req.base, check.sha256
    log.info("SAM base %s: %s, sha256 %s (%s)", base_id, check.path, base_sha,
             "verified" if check.verified else "unverified")
    device = None if s.device == "auto" else s.device
    cache = EmbeddingCache()  # memory only: held-out embeddings shared while the encoder is
    before, cur_name, problems = _sam_current(req, sam, base_id, base_sha, held, cache, device,
                                              progress)
    base_key = (base_id, base_sha)

    def measure(desc: str) -> HeldOut:
        if s.lora:  # the encoder changed: embeddings of its own
            return _sam_held_out(sam, held, (f"{req.name}:tuning", None), EmbeddingCache(),
                                 device, progress, desc)
        return _sam_held_out(sam, held, base_key, cache, device, progress, desc)

    curve = []
    names = delta_names(sam, decoder=s.train_decoder, encoder_qkv=s.lora)
    for n in req.curve:
        if n >= n_train:
            break
        sub = _subset(train_set, n)
        saved = _sam_tensors(sam, names)
        try:
            tune_sam_decoder(sam, sub, [], replace(s, steps=curve_steps(s.steps, n)),
                             checkpoint_path=None, progress=progress)
            h = measure(f"held-out after {n}")
        finally:
            _put_back(sam, saved)
        curve.append({"masks": sum(len(i.instances) for i in sub), "box": h.mean("box"),
                      "point": h.mean("point")})

    digest = req.data.digest()
    ck = None
    if req.checkpoint_dir is not None:
        ck = Path(req.checkpoint_dir) / f"{req.name}.{digest[:12]}.sam.ckpt"
    step_cb = None if on_step is None else (lambda step, _loss: on_step(step, s.steps))
    t0 = time.perf_counter()
    result = tune_sam_decoder(sam, train_set, [], s, checkpoint_path=ck, progress=progress,
                              on_step=step_cb)
    seconds = time.perf_counter() - t0
    after = measure(f"held-out {req.name}")
    curve.append({"masks": n_train, "box": after.mean("box"), "point": after.mean("point")})
    others = rivals(held, {cur_name, base_id}, progress, include_sam=False)
    promoted, reason, gain = _gate(req, before, after, cur_name, others)

    version = registry.next_version(req.name, req.root)
    folder = registry.model_dir(req.name, version, req.root)
    held_digest = Dataset(held).digest()
    doc = result.manifest(base_id)
    doc["held_out"] = {"digest": held_digest, "current": {"model": cur_name,
                       "held_out": before.table()}, "after": after.table()}
    delta = save_sam_delta(folder / registry.DELTA_NAME, sam, base_sha, doc,
                           names=result.delta_names)
    data, sides = _data_record(req, train_set, held, digest)
    manifest = ModelManifest(
        name=req.name, version=version,
        net={"kind": registry.SAM_DELTA_KIND, "delta": doc["kind"], "base_model_id": base_id,
             "base_checkpoint": str(check.path), "base_verified": check.verified,
             "delta_file": registry.DELTA_NAME, "tensors": len(result.delta_names),
             "params": doc["params"]},
        weights_sha256=delta["delta_sha256"], base=base_id, base_sha256=base_sha,
        data=data, split=sides, settings=s.to_dict(),
        metrics={"held_out": after.table(), "current": {"model": cur_name,
                 "held_out": before.table()},
                 "rivals": {k: v.table() for k, v in others.items()},
                 "gate": {"promoted": promoted,
                 "margin": req.margin, "gain": round(gain, 4), "reason": reason},
                 "curve": curve, "train_seconds": round(seconds, 1), "steps": result.steps,
                 "seconds_per_step": None if math.isnan(result.seconds_per_step)
                 else round(result.seconds_per_step, 3)},
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    record = {"kind": registry.SAM_DELTA_KIND, **manifest.to_dict()}
    write_atomic(folder / MANIFEST_NAME,  # last: the folder counts as a version from here on
                 (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    if promoted:
        registry.promote(req.recipe, manifest, reason, req.root)
    if ck is not None:
        ck.unlink(missing_ok=True)
    return TuneOutcome(manifest, folder, before, after, cur_name, promoted, reason, curve,
                       seconds, [*req.data.problems, *problems], others)

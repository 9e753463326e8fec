"""A local Llama-architecture model (plus an optional PEFT LoRA adapter) that writes the report
narrative with slots. Loaded offline (local_files_only): on a GPU when present (bf16), else CPU.

The prompt lists the facts as slot names, never as values (`d1 scratch length {d1.length}`), so
the model has no numbers to copy wrongly; it writes `{d1.length}` and fill_slots puts the value
in. Whatever it writes is then checked (facts.check_text) before it reaches a report.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from app.report.facts import ReportFacts
from sam_engine.errors import SamEngineError

ADAPTER_META = "report_adapter.json"  # style, language and prompt format of an adapter
MODEL_META = "report_model.json"  # written by demo_model.py into the demo base model
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
INSTRUCTION = (
    "Write the summary of an industrial inspection report from the facts below. Never write a "
    "number, date or id yourself: copy the slot names in braces exactly as given (for example "
    "{d1.length}); name each defect with its class and number (scratch #1); end with the verdict."
)


class ReportModelError(SamEngineError):
    """A report model or adapter folder is missing, incomplete or cannot be loaded."""


def build_prompt(facts: ReportFacts, header: str = "Report:") -> str:
    """The facts as the model sees them (the same text in training and generation)."""
    lines = ["Facts:",
             "part {part} serial {serial} lot {lot} station {station} operator {operator}",
             f"recipe {{recipe}} defects {len(facts.defects)}"]
    for d in facts.defects:
        dims = " ".join(f"{k} {{d{d.index}.{k}}}" for k in ("length", "width", "area")
                        if getattr(d, k) is not None)
        lines.append(f"d{d.index} {d.defect_class} {dims}".rstrip())
    for r in facts.reasons:
        who = f"d{r.defect}" if r.defect else r.defect_class
        vals = "".join(f" {k} {{r{r.index}.{k}}}" for k in ("measured", "allowed")
                       if getattr(r, k) is not None)
        zone = f" zone {{r{r.index}.zone}}" if r.zone else ""
        lines.append(f"r{r.index} {who} {r.rule}{vals}{zone}")
    lines.append(f"verdict {facts.verdict or 'none'}")
    lines.append(header)
    return "\n".join(lines) + "\n"


def _check_folder(base: Path) -> dict:
    if not base.exists():
        raise ReportModelError(
            f"{base}: no such model folder. Give --base a local Hugging Face Llama folder "
            "(config.json, model.safetensors, tokenizer.json), e.g. models/report-demo")
    if not base.is_dir():
        raise ReportModelError(f"{base}: not a folder; --base needs a model folder")
    cfg_path = base / "config.json"
    if not cfg_path.is_file():
        raise ReportModelError(f"{base}: config.json is missing; this is not a Hugging Face "
                               "model folder")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportModelError(f"{cfg_path}: unreadable ({exc}); copy the model again") from exc
    if cfg.get("model_type") != "llama":
        raise ReportModelError(f"{base}: model_type is {cfg.get('model_type')!r}; the report "
                               "generator needs a Llama-architecture model")
    if not any((base / f).is_file() for f in WEIGHT_FILES):
        raise ReportModelError(f"{base}: no weights ({' or '.join(WEIGHT_FILES[::2])})")
    if not any((base / f).is_file() for f in TOKENIZER_FILES):
        raise ReportModelError(f"{base}: no tokenizer (tokenizer.json or tokenizer.model)")
    return cfg


def pick_device(device: str | None = None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_base(base: str | Path, device: str | None = None):
    """(model, tokenizer) from a local folder, offline; ReportModelError when it cannot."""
    base = Path(base)
    _check_folder(base)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(device)
    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() \
        else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=dtype)
    except Exception as exc:  # transformers raises many kinds; all mean "this folder is broken"
        raise ReportModelError(f"{base}: cannot load the model ({type(exc).__name__}: {exc}); "
                               "the files may be corrupt or incomplete: copy the folder again"
                               ) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def read_adapter_meta(adapter: str | Path) -> dict:
    p = Path(adapter) / ADAPTER_META
    return json.loads(p.read_text()) if p.is_file() else {}


def attach_adapter(model, adapter: str | Path):
    """The model with a PEFT LoRA adapter from a local folder (ReportModelError if unusable)."""
    from peft import PeftModel

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise ReportModelError(f"{adapter}: no adapter_config.json; --adapter needs a folder "
                               "written by `sam-inspect report train`")
    try:
        return PeftModel.from_pretrained(model, adapter, local_files_only=True).eval()
    except Exception as exc:
        raise ReportModelError(f"{adapter}: cannot load the LoRA adapter "
                               f"({type(exc).__name__}: {exc}); was it trained on this base "
                               "model?") from exc


@dataclass(frozen=True)
class Generation:
    text: str  # with slots, as the model wrote it
    new_tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


class LlamaReportWriter:
    """Writes a slotted narrative for ReportFacts with a local Llama (+ LoRA adapter)."""

    def __init__(self, model, tokenizer, *, base: Path, adapter: Path | None = None,
                 lang: str = "en", prompt_format: str = "plain") -> None:
        self.model, self.tokenizer = model, tokenizer
        self.base, self.adapter = base, adapter
        self.lang, self.prompt_format = lang, prompt_format

    @property
    def description(self) -> str:
        meta = self.base / MODEL_META
        name = self.base.name
        if meta.is_file():
            name += f" ({json.loads(meta.read_text()).get('description', '')})".replace(" ()", "")
        s = f"Llama model {name}"
        if self.adapter is not None:
            style = read_adapter_meta(self.adapter).get("style", "")
            s += f" + LoRA adapter {self.adapter.name}" + (f" (style {style})" if style else "")
        return s

    def prompt(self, facts: ReportFacts) -> str:
        text = build_prompt(facts)
        if self.prompt_format == "chat":
            return self.tokenizer.apply_chat_template(
                [{"role": "system", "content": INSTRUCTION},
                 {"role": "user", "content": text.removesuffix("Report:\n")}],
                tokenize=False, add_generation_prompt=True)
        return text

    def write(self, facts: ReportFacts, max_new_tokens: int = 200) -> Generation:
        import torch

        enc = self.tokenizer(self.prompt(facts), return_tensors="pt",
                             add_special_tokens=self.prompt_format == "plain")
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                      eos_token_id=self.tokenizer.eos_token_id,
                                      pad_token_id=self.tokenizer.pad_token_id)
        seconds = time.perf_counter() - t0
        new = out[0, enc["input_ids"].shape[1]:]
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return Generation(text, int(new.numel()), seconds)


def load_writer(base: str | Path, adapter: str | Path | None = None,
                device: str | None = None) -> LlamaReportWriter:
    """A report writer from a local base model folder and an optional LoRA adapter folder."""
    base = Path(base)
    model, tokenizer = load_base(base, device)
    meta = {}
    if adapter is not None:
        adapter = Path(adapter)
        meta = read_adapter_meta(adapter)
        model = attach_adapter(model, adapter)
    fmt = meta.get("prompt_format") or ("chat" if getattr(tokenizer, "chat_template", None)
                                        else "plain")
    return LlamaReportWriter(model, tokenizer, base=base, adapter=adapter,
                             lang=meta.get("lang", "en"), prompt_format=fmt)

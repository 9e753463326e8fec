"""LoRA fine-tuning (PEFT) of a local Llama on findings -> report pairs.

Defaults follow the issue: r=16, alpha=32, dropout 0.05 on q_proj and v_proj ("all-linear" for
every linear layer), AdamW with a cosine schedule from 3e-4, gradient accumulation, early
stopping on the validation loss (the best adapter is kept), bf16 autocast on a GPU, a tqdm bar
with the loss. The loss counts only the report tokens, not the prompt.

The loop is written out rather than using transformers.Trainer: it is ~50 lines built from the
library's pieces (AdamW, get_cosine_schedule_with_warmup), needs no accelerate config, evaluates
the prompt-masked validation loss on our own schedule, and the same loop pre-trains the small
demo model from scratch (demo_model.py).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from app.outputs import atomic_write
from app.report.data_builder import pair_facts, read_pairs
from app.report.llama import ADAPTER_META, build_prompt, load_base
from app.report.template import LANG


@dataclass
class TrainSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] | str = ("q_proj", "v_proj")  # or "all-linear"
    lr: float = 3e-4
    epochs: int = 3
    batch_size: int = 8
    grad_accum: int = 2
    val_fraction: float = 0.1
    eval_every: int = 20  # optimizer steps between validation-loss checks
    patience: int = 3  # checks without improvement before stopping
    warmup_ratio: float = 0.05
    max_steps: int | None = None  # optimizer steps; None: epochs decide
    max_length: int = 512
    weight_decay: float = 0.0
    seed: int = 0


@dataclass
class TrainResult:
    steps: int
    initial_val_loss: float
    best_val_loss: float
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    stopped_early: bool = False
    seconds: float = 0.0

    @property
    def trainable_share(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else 0.0


def encode(tokenizer, prompt: str, completion: str, max_length: int) -> tuple[list, list]:
    """input_ids and labels (-100 over the prompt) of one example, ending with EOS."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    p = bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (p + c)[:max_length]
    labels = ([-100] * len(p) + c)[:max_length]
    return ids, labels


def pair_examples(tokenizer, pairs: list[dict], max_length: int = 512,
                  header: str = "Report:") -> list[tuple[list, list]]:
    return [encode(tokenizer, build_prompt(pair_facts(p), header), p["report"], max_length)
            for p in pairs]


def _batches(examples, batch_size: int, pad_id: int, rng: random.Random | None):
    order = list(range(len(examples)))
    if rng is not None:
        rng.shuffle(order)
    for i in range(0, len(order), batch_size):
        chunk = [examples[j] for j in order[i:i + batch_size]]
        n = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), n), pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), n), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), n), dtype=torch.long)
        for k, (a, b) in enumerate(chunk):
            ids[k, :len(a)] = torch.tensor(a)
            labels[k, :len(b)] = torch.tensor(b)
            mask[k, :len(a)] = 1
        yield ids, labels, mask


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def validation_loss(model, examples, pad_id: int, batch_size: int = 16) -> float:
    """Mean loss per report token over examples."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad(), _autocast(device):
        for ids, labels, mask in _batches(examples, batch_size, pad_id, None):
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device))
            logits = out.logits[:, :-1].float()
            target = labels[:, 1:].to(device)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                reduction="sum")
            total += float(loss)
            count += int((target != -100).sum())
    return total / max(count, 1)


def fit(model, train, val, settings: TrainSettings, pad_id: int, progress: bool = True,
        desc: str = "train") -> TrainResult:
    """Train the parameters of model that require grad; keeps the best validation state."""
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    per_epoch = math.ceil(len(train) / settings.batch_size / settings.grad_accum)
    total = settings.max_steps or per_epoch * settings.epochs
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, int(settings.warmup_ratio * total), total)
    t0 = time.perf_counter()
    best = validation_loss(model, val, pad_id) if val else math.inf
    result = TrainResult(0, best, best, [(0, best)])
    best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    bad = 0
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    step, micro, running = 0, 0, None
    while step < total and bad < settings.patience:
        for ids, labels, mask in _batches(train, settings.batch_size, pad_id, rng):
            model.train()
            with _autocast(device):
                out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                            labels=labels.to(device))
            (out.loss / settings.grad_accum).backward()
            loss = out.loss.item()
            running = loss if running is None else 0.9 * running + 0.1 * loss
            micro += 1
            if micro % settings.grad_accum:
                continue
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            result.train_losses.append(running)
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}", val=f"{best:.3f}")
            if val and (step % settings.eval_every == 0 or step == total):
                v = validation_loss(model, val, pad_id)
                result.val_losses.append((step, v))
                if v < best - 1e-4:
                    best, bad = v, 0
                    best_state = {n: p.detach().clone() for n, p in model.named_parameters()
                                  if p.requires_grad}
                else:
                    bad += 1
            if step >= total or bad >= settings.patience:
                break
    bar.close()
    if val:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in best_state:
                    p.copy_(best_state[n])
    result.steps, result.best_val_loss = step, best
    result.stopped_early = bad >= settings.patience
    result.seconds = time.perf_counter() - t0
    return result


def add_lora(model, settings: TrainSettings):
    """The model wrapped with fresh LoRA layers (PEFT)."""
    from peft import LoraConfig, get_peft_model

    targets = settings.target_modules
    cfg = LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, cfg)


def split(examples: list, val_fraction: float, seed: int) -> tuple[list, list]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, int(round(len(examples) * val_fraction))) if len(examples) > 1 else 0
    val = [examples[i] for i in order[:n_val]]
    return [examples[i] for i in order[n_val:]], val


def train_lora(model, tokenizer, pairs: list[dict], settings: TrainSettings,
               progress: bool = True, log=None):
    """(peft_model, TrainResult): LoRA on pairs, validation split by val_fraction."""
    examples = pair_examples(tokenizer, pairs, settings.max_length)
    train, val = split(examples, settings.val_fraction, settings.seed)
    peft_model = add_lora(model, settings)
    trainable, total = peft_model.get_nb_trainable_parameters()
    if log:
        log(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.3f} %)")
        log(f"{len(train)} training and {len(val)} validation pairs")
    result = fit(peft_model, train, val, settings, tokenizer.pad_token_id, progress, "LoRA")
    result.trainable_params, result.total_params = int(trainable), int(total)
    return peft_model, result


def save_adapter(peft_model, out_dir: str | Path, *, base: str | Path, settings: TrainSettings,
                 result: TrainResult, style: str, lang: str) -> Path:
    """The adapter (adapter_config.json + safetensors) and how it was made (report_adapter.json)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out)
    meta = {
        "style": style,
        "lang": lang,
        "prompt_format": "plain",
        "base_model": Path(base).name,
        "settings": {k: list(v) if isinstance(v, tuple) else v
                     for k, v in asdict(settings).items()},
        "steps": result.steps,
        "initial_val_loss": round(result.initial_val_loss, 4),
        "best_val_loss": round(result.best_val_loss, 4),
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
    }
    atomic_write.write_text(out / ADAPTER_META, json.dumps(meta, indent=2) + "\n")
    return out


def train_adapter(data: str | Path, base: str | Path, out_dir: str | Path,
                  settings: TrainSettings, device: str | None = None,
                  progress: bool = True) -> TrainResult:
    """`sam-inspect report train`: read pairs, train, save; prints the trainable share."""
    pairs = read_pairs(data)
    if len(pairs) < 2:
        raise ValueError(f"{data}: {len(pairs)} pair(s); training needs at least 2")
    styles = {p["style"] for p in pairs}
    style = styles.pop() if len(styles) == 1 else "mixed"
    model, tokenizer = load_base(base, device)
    peft_model, result = train_lora(model, tokenizer, pairs, settings, progress, log=print)
    save_adapter(peft_model, out_dir, base=base, settings=settings, result=result, style=style,
                 lang=LANG.get(style, "en"))
    return result

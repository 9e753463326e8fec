"""Reproduce models/report-demo: a tiny Llama-architecture report writer and its German LoRA.

    python -m app.report.demo_model [--out models/report-demo] [--steps 1200]

A DEMONSTRATION model: it only knows this project's report wording, trained for a few minutes
on a CPU from template-made pairs (data_builder.py). Steps:
1. pairs: English ("en") and German ("de") sentences for the base model, terse German
   ("de_terse") for the adapter, findings varied and de-duplicated by ROUGE-L;
2. a byte-level BPE tokenizer (`tokenizers`) trained on that corpus, digits split one by one;
3. a LlamaConfig with 4 layers and hidden size 128 (~1 M parameters), trained from scratch on
   "en" under the prompt header "Report:" and "de" under "Bericht:" (so, like a real Llama, the
   base model knows both languages);
4. a LoRA adapter (PEFT, all linear layers) that makes terse German the answer to the usual
   "Report:" prompt: a second report style in a ~0.3 MB adapter;
5. eval.json: ROUGE-L, fact accuracy and tokens/s of base and adapter on held-out findings.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from app.outputs import atomic_write
from app.report.llama import MODEL_META, build_prompt

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "models" / "report-demo"
SPECIAL = ["<s>", "</s>", "<pad>"]


def slot_vocabulary(max_defects: int = 8) -> list[str]:
    """Every slot name fill_slots knows for up to max_defects defects and reasons."""
    names = ["part", "serial", "lot", "station", "operator", "recipe", "n", "date", "verdict"]
    for k in range(1, max_defects + 1):
        names += [f"d{k}.{m}" for m in ("length", "width", "area", "edge", "datum",
                                        "max_length", "max_width", "max_area")]
        names += [f"r{k}.{m}" for m in ("measured", "allowed", "zone")]
    return ["{" + n + "}" for n in names]


def train_tokenizer(texts: list[str], vocab_size: int = 768):
    """A byte-level BPE tokenizer (any text can be encoded) wrapped for transformers."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    # each slot is one token: shorter sequences, and copying a slot is one step for the model
    tok.add_tokens([AddedToken(s, normalized=False) for s in slot_vocabulary()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def tiny_llama(tokenizer, hidden: int = 128, layers: int = 4, heads: int = 4,
               intermediate: int = 352, max_positions: int = 512, seed: int = 0):
    """A randomly initialised LlamaForCausalLM of the given size (tied embeddings)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def build(out: Path = DEFAULT_OUT, steps: int = 600, adapter_steps: int = 200,
          n_pairs: int = 300, seed: int = 0, progress: bool = True) -> dict:

    from app.report.data_builder import build_pairs, pair_facts
    from app.report.evaluate import evaluate_writer
    from app.report.llama import LlamaReportWriter
    from app.report.train import TrainSettings, encode, fit, save_adapter, split, train_lora

    t0 = time.perf_counter()
    base_pairs, stats = build_pairs(n_pairs, ("en", "de"), seed=seed)
    print(f"base pairs: {stats.describe()}")
    style_pairs, stats_b = build_pairs(n_pairs // 2, ("de_terse",), seed=seed + 1)
    print(f"adapter pairs: {stats_b.describe()}")
    held_out, _ = build_pairs(24, ("en", "de_terse"), seed=seed + 2)

    headers = {"en": "Report:", "de": "Bericht:"}
    corpus = [build_prompt(pair_facts(p), headers.get(p["style"], "Report:")) + p["report"]
              for p in base_pairs + style_pairs]
    tokenizer = train_tokenizer(corpus)
    model = tiny_llama(tokenizer, seed=seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tokenizer: {len(tokenizer)} tokens; model: {n_params / 1e6:.2f} M parameters")

    examples = [encode(tokenizer, build_prompt(pair_facts(p), headers[p["style"]]),
                       p["report"], 512) for p in base_pairs]
    train, val = split(examples, 0.05, seed)
    settings = TrainSettings(lr=3e-3, batch_size=16, grad_accum=1, max_steps=steps,
                             eval_every=100, patience=4, weight_decay=0.01, seed=seed)
    result = fit(model, train, val, settings, tokenizer.pad_token_id, progress, "base")
    print(f"base: {result.steps} steps, val loss {result.initial_val_loss:.3f} -> "
          f"{result.best_val_loss:.3f} ({result.seconds:.0f} s)")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {"description": "demonstration model, not for production",
            "parameters": n_params, "base_steps": result.steps,
            "base_val_loss": round(result.best_val_loss, 4),
            "headers": headers, "seed": seed}
    atomic_write.write_text(out / MODEL_META, json.dumps(meta, indent=2) + "\n")

    lora = TrainSettings(target_modules="all-linear", lr=2e-3, batch_size=16, grad_accum=1,
                         max_steps=adapter_steps, eval_every=50, patience=3, seed=seed)
    peft_model, res_b = train_lora(model, tokenizer, style_pairs, lora, progress, log=print)
    print(f"adapter: {res_b.steps} steps, val loss {res_b.initial_val_loss:.3f} -> "
          f"{res_b.best_val_loss:.3f} ({res_b.seconds:.0f} s)")
    adapter_dir = out / "adapter-de-terse"
    save_adapter(peft_model, adapter_dir, base=out, settings=lora, result=res_b,
                 style="de_terse", lang="de")

    en_ref = [p for p in held_out if p["style"] == "en"]
    de_ref = [p for p in held_out if p["style"] == "de_terse"]
    with peft_model.disable_adapter():
        base_writer = LlamaReportWriter(peft_model, tokenizer, base=out)
        ev_base = evaluate_writer(base_writer, en_ref)
        ev_base_b = evaluate_writer(base_writer, de_ref)
    ad_writer = LlamaReportWriter(peft_model, tokenizer, base=out, adapter=adapter_dir, lang="de")
    ev_ad = evaluate_writer(ad_writer, de_ref)
    report = {"base_vs_en": ev_base.to_dict(), "base_vs_de_terse": ev_base_b.to_dict(),
              "adapter_vs_de_terse": ev_ad.to_dict(),
              "build_seconds": round(time.perf_counter() - t0, 1)}
    atomic_write.write_text(out / "eval.json", json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=600, help="base model optimizer steps")
    ap.add_argument("--adapter-steps", type=int, default=200)
    ap.add_argument("--pairs", type=int, default=300, help="pairs per base style")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy "
                    "machine: a small model gains little from more)")
    args = ap.parse_args(argv)
    random.seed(args.seed)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    build(args.out, args.steps, args.adapter_steps, args.pairs, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

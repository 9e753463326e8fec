"""`sam-inspect report eval`: ROUGE-L against held-out reports, fact accuracy, tokens/s."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from app.report.data_builder import pair_facts
from app.report.facts import fill_slots
from app.report.generate import check_and_repair
from app.report.rouge import rouge_l
from app.report.template import LANG


@dataclass
class EvalResult:
    n: int
    rouge_l: float  # mean ROUGE-L F of the model's filled text vs the reference
    fact_accuracy: float  # share of claims in the model's own text that match the findings
    claims: int
    tokens_per_s: float
    outcomes: Counter = field(default_factory=Counter)  # generated / repaired / template

    def to_dict(self) -> dict:
        return {"n": self.n, "rouge_l": round(self.rouge_l, 4),
                "fact_accuracy": round(self.fact_accuracy, 4), "claims": self.claims,
                "tokens_per_s": round(self.tokens_per_s, 1), "outcomes": dict(self.outcomes)}

    def describe(self) -> str:
        out = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return (f"{self.n} reports: ROUGE-L {self.rouge_l:.3f}, fact accuracy "
                f"{self.fact_accuracy:.1%} of {self.claims} claims, {self.tokens_per_s:.0f} "
                f"tokens/s; outcomes: {out}")


def evaluate_writer(writer, pairs: list[dict], max_new_tokens: int = 200) -> EvalResult:
    """Generate for each pair's findings and compare with its reference report."""
    scores, correct, claims, tokens, seconds = [], 0, 0, 0, 0.0
    outcomes: Counter = Counter()
    for pair in pairs:
        facts = pair_facts(pair)
        lang = LANG.get(pair["style"], "en")
        reference, _ = fill_slots(pair["report"], facts, lang)
        gen = writer.write(facts, max_new_tokens=max_new_tokens)
        tokens += gen.new_tokens
        seconds += gen.seconds
        text, _ = fill_slots(gen.text, facts, writer.lang)
        scores.append(rouge_l(reference, text))
        nar = check_and_repair(gen.text, facts, pair["style"], writer.description)
        correct += nar.model_check.n_correct
        claims += len(nar.model_check.claims)
        outcomes[nar.status] += 1
    n = len(pairs)
    return EvalResult(n, sum(scores) / n if n else 0.0, correct / claims if claims else 1.0,
                      claims, tokens / seconds if seconds else 0.0, outcomes)

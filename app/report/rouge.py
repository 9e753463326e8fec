"""ROUGE-L (the `rouge-score` package) with a tokenizer fit for inspection reports.

rouge-score's default tokenizer lowercases, replaces every non [a-z0-9] character by a space and
so drops umlauts and CJK text and splits "2.45" into "2" and "45". Reports are full of decimals
and may be German or Chinese, so ReportTokenizer keeps decimals (point or comma) as one token,
keeps letters of any script, and makes each CJK character a token (as in Chinese ROUGE).
"""

from __future__ import annotations

import re
from collections import Counter

from rouge_score import rouge_scorer

_TOKEN_RE = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]"  # one CJK character per token
    r"|\d+(?:[.,]\d+)*"  # 2.45, 2,45, 1.0.0
    r"|[^\W\d_]+"  # words in any script (mm² stays one token)
)


class ReportTokenizer:
    """The tokenizer interface rouge-score expects: tokenize(text) -> list of str."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN_RE.findall(text.lower())


_TOKENIZER = ReportTokenizer()
_SCORER = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_TOKENIZER)


def rouge_l(reference: str, prediction: str) -> float:
    """ROUGE-L F-measure of prediction against reference."""
    return _SCORER.score(reference, prediction)["rougeL"].fmeasure


class NearDuplicateFilter:
    """Keeps texts whose ROUGE-L against every kept text stays below a threshold.

    Every pair is compared (as in Self-Instruct); the ROUGE-1 F-measure, an upper bound of
    ROUGE-L computed from token counts, skips the quadratic LCS for pairs that cannot reach
    the threshold, so the result equals the exhaustive one.
    """

    def __init__(self, threshold: float = 0.7) -> None:
        self.threshold = threshold
        self.kept: list[tuple[str, Counter[str], int]] = []

    def add(self, text: str) -> bool:
        """Keep text unless it is a near-duplicate; returns whether it was kept."""
        tokens = _TOKENIZER.tokenize(text)
        counts = Counter(tokens)
        n = len(tokens)
        for other, other_counts, m in self.kept:
            overlap = sum((counts & other_counts).values())
            bound = 2.0 * overlap / (n + m) if n + m else 1.0
            if bound >= self.threshold and rouge_l(other, text) >= self.threshold:
                return False
        self.kept.append((text, counts, n))
        return True

"""Zero-click inspection in the product: which models find which of a recipe's classes
(plan.py: a trained finder, a model taught by accepted examples, a golden-sample anomaly model,
each from the tuned-model registry or named), running them on an image, and turning what they
find into measured findings. Imports app.inspection and sam_engine; torch only when a PyTorch
finder is loaded, so the torch-free line tool shares the class planning.
"""

from app.finding.plan import (
    FindError,
    FindPlan,
    FindSpec,
    choose_classes,
    find_defects,
    plan_find,
    to_findings,
)

__all__ = ["FindError", "FindPlan", "FindSpec", "choose_classes", "find_defects", "plan_find",
           "to_findings"]

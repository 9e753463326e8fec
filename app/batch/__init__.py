"""Batch mode: inspect every image under a folder without a person (`sam-inspect batch`).

discovery finds the images, prompt_sources gives each image its prompts (recipe, per-image prompt
files or automatic masks), inspect_image holds the per-image steps every backend shares,
local_backend pipelines them on one machine and ray_backend on a Ray cluster, outputs and ledger
make results durable and resumable, out_folder locks the output folder for a run, faults holds
the named kill points the crash tests use, runner ties it together and summary reports it.
"""

from app.batch.config import BatchConfig
from app.batch.runner import BatchResult, run_batch

__all__ = ["BatchConfig", "BatchResult", "run_batch"]

"""Zero-click defect finding: every defect of the recipe's classes, without prompts.

types (Found, FindResult: what every finder returns), preprocess (numpy: the finder's one
preprocessing and post-processing, shared by PyTorch and the torch-free ONNX runtime; how
components are grouped into defects), model (the class-aware segmentation network),
finder (Finder on PyTorch, load/save), train (training from accepted defects and clean
parts), metrics (pixel IoU, defect-level recall/precision, image-level class accuracy),
features (per-pixel features for learning from examples), fewshot (teach by one defect),
anomaly (golden samples: an anomaly score from good parts).
Imports the sam_engine top level and sam_engine.learned (data, weights, registry) only; never
Qt or app. Modules that need torch import it themselves; types, preprocess, metrics,
features, fewshot and anomaly work without it.
"""

"""The inspection domain: findings, measurements, recipes, verdicts, sampling plans,
fiducials and evaluation. No Qt, no database, no files beyond what each is for.

May import: numpy, OpenCV, SciPy, scikit-image, pycocotools, sam_engine.
"""

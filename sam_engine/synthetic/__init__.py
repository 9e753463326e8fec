"""The part/defect generator the project owns: synthetic photos of industrial parts with
ground-truth masks, for tuning, tests and the demo (`python -m sam_engine.synthetic.generator`).

May import: numpy, OpenCV.
"""

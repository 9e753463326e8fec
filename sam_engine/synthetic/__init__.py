"""The part/defect generator the project owns: synthetic photos of industrial parts with
ground-truth masks, for tuning, tests and the demo (`python -m sam_engine.synthetic.generator`).

generator (make_part: the classic parts of the samples and tests), hard (make_hard_part and
training_part: thin low-contrast cracks on rough texture, defects that fill their box, diffuse
regions, blob clusters, many textures and lights, clean parts; what the learned base trains
on), noise (the random fields both draw from).

May import: numpy, OpenCV.
"""

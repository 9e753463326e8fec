"""The classic engine's few free constants, in one place, each with why it has its value.

All were chosen on SYNTHETIC tuning parts only (sam_engine.synthetic.generator; protocol and
commands in
sam_engine/classic/README.md). Sizes are relative to the processing window (at most
window.MAX_SIDE px a side) or the prompt, and contrasts are in units of the background's robust
noise, so none depends on the image's resolution or brightness.
"""

from __future__ import annotations

import math

# Smoothing of the grey image before thresholding, in processing-window pixels: the noise scale
# of one pixel (a fixed level scored best on the tuning set; box-relative smoothing and extra
# coarse scales helped smooth stains a little and cost thin cracks and scratches more).
SIGMA = 0.7

# Levels between the background (0) and the object's value (1) that cut the candidates, shared by
# box prompts (object value = the box's 90th percentile) and clicks (the clicked value):
# SAM's sub-part / part / whole.
LEVELS = (0.3, 0.5, 0.7)

# Level offset of the stability score (SAM compares masks at logit thresholds +-1 around 0).
STABILITY_STEP = 0.1

# A fixed detection level in background noise units (2 sigma: ~2% false pixels in Gaussian noise)
# and the hysteresis pair for thin structures (grow from 4 sigma down to 2 sigma).
NOISE_Z = 2.0
THIN_Z = (2.0, 4.0)

# A click's thin (line) candidate needs a top-hat response at the click of >= 4 noise units and
# must be at least twice as elongated as a disk (elongation of a disk = pi).
THIN_SEED_Z = 4.0
THIN_ASPECT = 2 * math.pi

# Clicks: after the grown region first closes inside the window, look one octave wider before
# stopping (a scratch's faint middle may close a window early).
EXTRA_OCTAVES = 1

# Clicks: the local contrast of a region is measured against a band around it twice as thick as
# the region itself (a scale-free neighbourhood).
BAND = 2.0

# Box prompts: a candidate's score is (box IoU of its bounding box with the prompt) ** FIT_EXP
# times its explained variance. 1, 2 and 3 scored within 0.002 on the tuning set; 2 kept.
FIT_EXP = 2.0

# Box prompts: the background is sampled in a margin around the box of this fraction of its
# half-perimeter (at least 4 px).
BOX_MARGIN = 0.1

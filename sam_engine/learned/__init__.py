"""The project's own learned engine and the tuning of models on inspectors' masks.

crops (numpy: prompt windows and network input, the one preprocessing of the learned engine),
model (the crop U-Net), crop_engine (the Engine contract over any crop-network backend),
engine (LearnedEngine on PyTorch), weights (model folders: safetensors + manifest, sha256
checked), data (training images from folders, COCO, the split), prompt_sim (simulated
inspector prompts), train (the training loop), heldout (held-out evaluation), registry (tuned
models and which one is promoted for a recipe), base (trains the base on synthetic parts
only), sam_tune (tuning SAM checkpoints: decoder on
cached embeddings, LoRA on the encoder). Imports the sam_engine top level only; never Qt or app.
Modules that need torch import it themselves; crops, crop_engine, data, prompt_sim and
heldout work without it.
"""

"""Fast twins of SAM's image encoders (ViT, TinyViT): same weights, same outputs, less
time; CPU row strips, window partitioning and the encoder input batch.

May import: torch, segment_anything (mobile_sam), sam_engine's contract modules.
"""

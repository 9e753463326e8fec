"""SAM backend: Meta's segment-anything behind the Engine contract (SamEngine), its fast
prompt decoder, the onnxruntime click decoder and the device choice.

May import: torch, segment_anything, sam_engine's contract modules, encoders, onnx.
"""

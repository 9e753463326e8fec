"""ONNX: traced graphs, export and verification, int8 copies, the manifest, and the
torch-free runtime (OnnxEngine) the line controller uses.

May import: export/graphs/quantize need torch and onnx; manifest and runtime import only
numpy, onnxruntime, OpenCV and the contract modules (never torch).
"""

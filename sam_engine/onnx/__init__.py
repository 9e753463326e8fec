"""ONNX: traced graphs, export and verification, int8 copies, the manifest, and the
torch-free runtimes the line controller uses (OnnxEngine for SAM, OnnxLearnedEngine for the
learned engine's crop network: learned_export / learned_runtime).

May import: export/graphs/quantize/learned_export need torch and onnx; manifest, runtime and
learned_runtime import only numpy, onnxruntime, OpenCV and the contract modules (never torch).
"""

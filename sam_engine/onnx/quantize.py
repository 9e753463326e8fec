"""Dynamic int8 copies of exported graphs (onnxruntime.quantization; needs onnx, not torch).

Weights are int8 on 7 bits (reduce_range): with full 8-bit weights, x86 CPUs without VNNI
(AVX2, most AVX-512) saturate the 16-bit pair sums of u8 x s8 products, which on this machine
cut the decoder's click-mask IoU against fp32 to 0.65 (0.99 with 7 bits).

Encoder: every MatMul/Conv weight (onnxruntime's default op types), per output channel.

Decoders: only the two-way transformer's weight matrices, per output channel. Left in float:
the prompt encoder (its random-Fourier point encoding feeds sin/cos, where an 8-bit weight error
moves a click by pixels), the output hypernetworks (each of their outputs scales one mask's
logits everywhere), the upscaler and the IoU head. The heavy matmuls of our decoders multiply
activations by activations (image tokens by prompt tokens), which dynamic quantization leaves in
float anyway: an int8 decoder is about file size (about half of fp32), not speed.
onnxruntime quantizes MatMul but not Gemm (torch's Linear on 2-D inputs): Gemm nodes are first
rewritten as MatMul + Add.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

# node names (torch module scopes) and weight names that stay float in a decoder
_KEEP_FLOAT = ("output_hypernetworks", "iou_prediction_head", "prompt_encoder", "pe_layer",
               "output_upscaling", "mask_downscaling")


def _is_transformer_weight(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    """A MatMul/Gemm of the mask decoder's transformer on a stored weight matrix: the weight is
    a 2-D initialiser (per-channel int8 MatMul takes no 3-D weights) named after the
    transformer's modules or an anonymous one the exporter made
    from them (onnx::MatMul_*, transposed/reshaped copies); constants folded from other
    parts of the model (the upscaler, the mask-input folds) are Constant nodes, not
    initialisers."""
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
        return False
    w = node.input[1]
    if w not in inits or any(k in node.name or k in w for k in _KEEP_FLOAT):
        return False
    if inits[w].data_type != onnx.TensorProto.FLOAT or len(inits[w].dims) != 2:
        return False
    return w.startswith("sam.mask_decoder.transformer.") or w.startswith("onnx::MatMul")


def _gemm_as_matmul(model: onnx.ModelProto) -> None:
    """Rewrite every Gemm with alpha = beta = 1 and no transA as MatMul (+ Add) in place, as the
    quantizer would, but with unique names: onnxruntime's own rewrite names the Transpose of a
    non-constant B after B, which duplicates names when two Gemm nodes share B (ours do)."""
    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for k, n in enumerate(model.graph.node):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if (n.op_type != "Gemm" or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0
                or attrs.get("beta", 1.0) != 1.0):
            nodes.append(n)
            continue
        b = n.input[1]
        if attrs.get("transB", 0):
            if b in inits:
                wt = numpy_helper.from_array(
                    np.ascontiguousarray(numpy_helper.to_array(inits[b]).T), f"{b}_t{k}")
                model.graph.initializer.append(wt)
                b = wt.name
            else:
                t = f"{b}_t{k}"
                nodes.append(onnx.helper.make_node("Transpose", [b], [t], name=f"{n.name}_t"))
                b = t
        out = n.output[0]
        mm_out = f"{out}_mm" if len(n.input) > 2 and n.input[2] else out
        nodes.append(onnx.helper.make_node("MatMul", [n.input[0], b], [mm_out], name=n.name))
        if mm_out != out:
            nodes.append(onnx.helper.make_node("Add", [mm_out, n.input[2]], [out],
                                               name=f"{n.name}_bias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def decoder_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the decoder nodes quantize_decoder turns into int8."""
    inits = {i.name: i for i in model.graph.initializer}
    return [n.name for n in model.graph.node if _is_transformer_weight(n, inits)]


def quantize_decoder(src: Path, dst: Path) -> list[str]:
    """int8 copy of a decoder graph (see module doc); returns the quantized node names."""
    model = onnx.load(str(src))
    names = decoder_nodes(model)
    if not names:  # an empty list would mean "every node" to quantize_dynamic
        raise ValueError(f"{src} has no transformer weights to quantize")
    _gemm_as_matmul(model)
    with tempfile.TemporaryDirectory(prefix="sam_q_") as tmp:
        staged = Path(tmp) / "decoder.onnx"
        onnx.save_model(model, str(staged))
        _quantize_dynamic(staged, dst, per_channel=True, nodes=names)
    return names


def quantize_all(src: Path, dst: Path, external: bool = False) -> tuple[str, ...]:
    """Dynamic int8 copy of every MatMul/Conv weight (the encoder), per channel; external: src
    keeps its weights in external data (then so does dst, in `<dst name>.data`). Returns dst's
    data files."""
    _quantize_dynamic(src, dst, per_channel=True, nodes=None, external=external)
    data = dst.name + ".data"
    return (data,) if external and (dst.parent / data).exists() else ()


def _quantize_dynamic(src: Path, dst: Path, per_channel: bool, nodes: list[str] | None,
                      external: bool = False) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs every tensor at INFO/WARNING on root
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                reduce_range=True,
                nodes_to_quantize=nodes, op_types_to_quantize=["MatMul"] if nodes else None,
                use_external_data_format=external,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    finally:
        root.setLevel(level)

"""Choice of the torch device and precision the SAM image encoder runs with."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from sam_engine.errors import SamEngineError

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
_logged: set[DeviceChoice] = set()


@dataclass(frozen=True)
class DeviceChoice:
    """A torch device string ("cpu", "cuda:0", "mps"), a dtype name ("float32", "bfloat16",
    "float16") for the encoder's autocast, and why they were chosen."""

    device: str
    dtype: str
    reason: str

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _cuda_index(device: str) -> int:
    if device == "cuda":
        return torch.cuda.current_device()
    try:
        return int(device.split(":", 1)[1])
    except ValueError:
        raise SamEngineError(
            f"invalid device {device!r}: use cuda or cuda:N with N a GPU index"
        ) from None


def _resolve_device(preference: str | None) -> tuple[str, str]:
    """(torch device string, why) for a preference; raises when it cannot be honoured."""
    pref = (preference or "auto").strip().lower()
    if pref == "auto":
        if torch.cuda.is_available():
            index = torch.cuda.current_device()
            return f"cuda:{index}", f"cuda available: {torch.cuda.get_device_name(index)}"
        if _mps_available():
            return "mps", "no CUDA GPU; Apple MPS available"
        return "cpu", "no CUDA GPU or Apple MPS found: using the CPU"
    if pref == "cpu":
        return "cpu", "cpu requested"
    if pref == "cuda" or pref.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise SamEngineError(
                f"device {preference!r} requested but CUDA is not available (no NVIDIA GPU, "
                "driver, or a CPU-only torch build); use --device cpu or auto"
            )
        index = _cuda_index(pref)
        count = torch.cuda.device_count()
        if not 0 <= index < count:
            raise SamEngineError(
                f"device {preference!r} requested but only {count} CUDA GPU(s) exist "
                f"(cuda:0..cuda:{count - 1})"
            )
        return f"cuda:{index}", f"{pref} requested: {torch.cuda.get_device_name(index)}"
    if pref == "mps":
        if not _mps_available():
            raise SamEngineError(
                "device 'mps' requested but Apple MPS is not available; use --device cpu or auto"
            )
        return "mps", "mps requested"
    raise SamEngineError(f"unknown device {preference!r}: use auto, cpu, cuda, cuda:N or mps")


def _resolve_precision(device: str, precision: str) -> tuple[str, str]:
    """(dtype name, why) for a resolved device and a precision name."""
    kind = device.split(":", 1)[0]
    if precision == "auto":
        if kind == "cuda":
            if torch.cuda.is_bf16_supported():
                return "bfloat16", "bf16 supported"
            return "float16", "no bf16 support: fp16"
        if kind == "mps":
            return "float16", "fp16"
        return "float32", "fp32"
    if precision == "fp32":
        return "float32", "fp32 requested"
    if kind == "cpu":
        raise SamEngineError(
            f"precision {precision} is not supported on the CPU (the encoder runs in fp32 "
            "there); use --precision fp32 or auto"
        )
    if precision == "bf16":
        if kind != "cuda" or not torch.cuda.is_bf16_supported():
            raise SamEngineError(
                f"precision bf16 requested but {device} does not support bfloat16; "
                "use --precision fp16 or auto"
            )
        return "bfloat16", "bf16 requested"
    return "float16", "fp16 requested"


def choose_device(preference: str | None = None, precision: str = "auto") -> DeviceChoice:
    """The device and precision to run on.

    preference: None/"auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    precision: "auto" (bf16 on CUDA when supported, else fp16 on CUDA/MPS, fp32 on CPU), "fp32",
    "bf16" or "fp16". Raises SamEngineError when a request cannot be honoured.
    """
    prec = (precision or "auto").strip().lower()
    prec = _ALIASES.get(prec, prec)
    if prec not in PRECISIONS:
        raise SamEngineError(
            f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}"
        )
    device, why_device = _resolve_device(preference)
    dtype, why_dtype = _resolve_precision(device, prec)
    choice = DeviceChoice(device=device, dtype=dtype, reason=f"{why_device}, {why_dtype}")
    if choice not in _logged:
        _logged.add(choice)
        log.info("device %s, %s (%s)", choice.device, choice.dtype, choice.reason)
    return choice

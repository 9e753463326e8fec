"""choose_device with a faked torch.cuda / MPS."""

from __future__ import annotations

import logging

import pytest
import torch

from sam_engine.errors import SamEngineError
from sam_engine.sam import device as device_mod
from sam_engine.sam.device import DeviceChoice, choose_device


@pytest.fixture
def fake(monkeypatch):
    """Set what torch reports: fake(cuda=2, bf16=True, mps=False)."""

    def set_(cuda: int = 0, bf16: bool = True, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: f"NVIDIA H100 #{i}")
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    monkeypatch.setattr(device_mod, "_logged", set())
    return set_


def test_auto_prefers_cuda_with_bf16(fake):
    fake(cuda=1, bf16=True, mps=True)
    c = choose_device()
    assert c == choose_device("auto")
    assert (c.device, c.dtype) == ("cuda:0", "bfloat16") and c.torch_dtype is torch.bfloat16
    assert "NVIDIA H100" in c.reason and "bf16 supported" in c.reason


def test_auto_cuda_without_bf16_uses_fp16(fake):
    fake(cuda=1, bf16=False)
    c = choose_device(None)
    assert (c.device, c.dtype) == ("cuda:0", "float16") and "fp16" in c.reason


def test_auto_then_mps_then_cpu(fake):
    fake(cuda=0, mps=True)
    assert (choose_device().device, choose_device().dtype) == ("mps", "float16")
    fake(cuda=0, mps=False)
    c = choose_device()
    assert (c.device, c.dtype) == ("cpu", "float32") and c.torch_dtype is torch.float32
    assert "CPU" in c.reason


def test_explicit_cpu_even_with_cuda(fake):
    fake(cuda=1)
    c = choose_device("cpu")
    assert (c.device, c.dtype) == ("cpu", "float32") and "cpu requested" in c.reason


def test_explicit_cuda_index(fake):
    fake(cuda=2)
    assert choose_device("cuda").device == "cuda:0"
    c = choose_device("CUDA:1")
    assert c.device == "cuda:1" and "#1" in c.reason


@pytest.mark.parametrize("pref, fragment", [("cuda", "CUDA is not available"),
                                            ("cuda:0", "CUDA is not available"),
                                            ("mps", "MPS is not available"),
                                            ("tpu", "unknown device")])
def test_unavailable_devices_raise(fake, pref, fragment):
    fake(cuda=0, mps=False)
    with pytest.raises(SamEngineError, match=fragment):
        choose_device(pref)


@pytest.mark.parametrize("pref, fragment", [("cuda:2", "only 2 CUDA"), ("cuda:x", "invalid")])
def test_bad_cuda_index_raises(fake, pref, fragment):
    fake(cuda=2)
    with pytest.raises(SamEngineError, match=fragment):
        choose_device(pref)


def test_explicit_precision(fake):
    fake(cuda=1, bf16=True)
    assert choose_device("cuda", precision="fp32").dtype == "float32"
    assert choose_device("cuda", precision="fp16").dtype == "float16"
    assert choose_device("cuda", precision="float16").torch_dtype is torch.float16
    assert choose_device("cuda", precision="BF16").dtype == "bfloat16"
    assert choose_device("cpu", precision="fp32").dtype == "float32"


def test_unsupported_precision_raises(fake):
    fake(cuda=1, bf16=False, mps=True)
    with pytest.raises(SamEngineError, match="does not support bfloat16"):
        choose_device("cuda", precision="bf16")
    with pytest.raises(SamEngineError, match="does not support bfloat16"):
        choose_device("mps", precision="bf16")
    with pytest.raises(SamEngineError, match="not supported on the CPU"):
        choose_device("cpu", precision="fp16")
    with pytest.raises(SamEngineError, match="unknown precision"):
        choose_device("cpu", precision="int8")


def test_logged_once_at_info(fake, caplog):
    fake(cuda=0)
    with caplog.at_level(logging.INFO, logger="sam_engine.sam.device"):
        choose_device()
        choose_device()
    assert len(caplog.records) == 1 and "cpu" in caplog.records[0].getMessage()


def test_choice_is_frozen():
    c = DeviceChoice("cpu", "float32", "test")
    with pytest.raises(AttributeError):
        c.device = "cuda"  # type: ignore[misc]


def test_real_torch_gives_a_usable_device():
    c = choose_device()
    t = torch.zeros(1, device=c.device, dtype=torch.float32)
    assert t.device.type == c.device.split(":")[0]

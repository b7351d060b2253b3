"""resolve_amp: autocast only on CUDA; CPU requests dropped with one warning."""

from __future__ import annotations

import logging

import pytest
import torch

from vidccnet.engine import amp


@pytest.fixture(autouse=True)
def _fresh_warnings():
    amp._warned.clear()
    yield
    amp._warned.clear()


def test_cpu_requests_run_float32_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vidccnet.engine.amp"):
        for mode in ("none", False, None):
            assert amp.resolve_amp("cpu", mode) is None
        assert not caplog.records
        for _ in range(2):
            assert amp.resolve_amp(torch.device("cpu"), "bf16") is None
        assert amp.resolve_amp("cpu", True) is None
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2, msgs  # once per mode, not per call
    assert "amp=bf16 ignored on cpu" in msgs[0] and "CUDA only" in msgs[0]


def test_cuda_modes_and_bad_names() -> None:
    # float16 needs no query of the device: resolvable without a GPU
    assert amp.resolve_amp("cuda", "fp16") is torch.float16
    assert amp.resolve_amp("cuda:0", True) is torch.float16
    assert amp.resolve_amp("cuda", "float16") is torch.float16
    assert amp.amp_name(torch.float16) == "fp16" and amp.amp_name(None) == "none"
    assert amp.amp_name(torch.bfloat16) == "bf16"
    with pytest.raises(ValueError, match="one of none, bf16, fp16"):
        amp.resolve_amp("cuda", "fp8")


def test_autocast_context() -> None:
    x = torch.ones(2, 2)
    with amp.autocast("cpu", None):
        assert (x @ x).dtype == torch.float32
    with amp.autocast("cpu", torch.bfloat16):
        assert (x @ x).dtype == torch.bfloat16

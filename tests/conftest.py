"""Test-session settings and fixtures shared by every test folder."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Without a GPU the fused Triton kernels run under Triton's interpreter on CPU tensors (slowly).
# Triton reads the flag when a kernel is defined, so it is set before anything imports them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def fork_ranks():
    """``run(target, world, *args) -> {rank: result}``: ``target(rank, world, *args, queue)`` in
    ``world`` forked processes, each putting one ``(rank, result)`` on ``queue``. Skips where
    torch.distributed or fork is missing."""
    import multiprocessing as mp

    import torch.distributed as dist

    if not dist.is_available() or "fork" not in mp.get_all_start_methods():
        pytest.skip("needs torch.distributed and fork")

    def run(target, world: int, *args) -> dict:
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        procs = [ctx.Process(target=target, args=(r, world, *args, queue)) for r in range(world)]
        for p in procs:
            p.start()
        try:
            return dict(queue.get(timeout=600) for _ in procs)
        finally:
            for p in procs:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()

    return run


@pytest.fixture(scope="session")
def load_script():
    """``load(name) -> module``: ``scripts/<name>.py`` imported as a fresh module (its
    ``main(argv)`` is the command line), registered in ``sys.modules`` (dataclasses need it)."""

    def load(name: str):
        path = REPO / "scripts" / (name if name.endswith(".py") else f"{name}.py")
        module_name = f"script_{path.stem}_under_test"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def main_under_sigterm():
    """``run(main, argv) -> exit code``: ``main(argv)`` run with a SIGTERM handler of the
    caller's in place, which must be put back afterwards and never reached (a SIGTERM the
    script does not handle would reach it instead of killing pytest)."""
    import signal

    def outside(signum, frame):
        raise RuntimeError("SIGTERM reached the caller's handler")

    def run(main, argv: list[str]) -> int:
        previous = signal.signal(signal.SIGTERM, outside)
        try:
            rc = main(argv)
            assert signal.getsignal(signal.SIGTERM) is outside  # put back after the run
        finally:
            signal.signal(signal.SIGTERM, previous)
        return rc

    return run


@pytest.fixture(scope="session")
def save_tiny_checkpoint():
    """``save(path, class_names, model=..., data=..., prepare=None) -> path``: a checkpoint as
    ``scripts/train.py`` writes it of a freshly initialised model (seed 0). ``model`` and
    ``data`` are ``ModelConfig`` / ``DataConfig`` fields (``model["kwargs"]`` also go to
    ``create_model``); ``prepare(model)`` may change the weights before saving."""
    from vidccnet.engine.config import Config, DataConfig, ModelConfig, config_to_dict
    from vidccnet.models import create_model

    def save(path, class_names, model: dict, data: dict, prepare=None):
        cfg = Config(model=ModelConfig(**model), data=DataConfig(class_names=class_names, **data))
        torch.manual_seed(0)
        net = create_model(cfg.model.name, len(class_names), recurrence=cfg.model.recurrence,
                           **cfg.model.kwargs)
        if prepare is not None:
            prepare(net)
        torch.save({"model": net.state_dict(), "optimizer": {}, "lr_scheduler": {},
                    "scaler": None, "iteration": 0, "config": config_to_dict(cfg), "metrics": {},
                    "version": 1}, path)
        return path

    return save

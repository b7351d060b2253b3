"""Where the Triton backward's 16-bit dq error comes from (the record behind the figures in
vidccnet/ops/triton_cca.py's docstring). Run on CPU, in Triton's interpreter:

    TRITON_INTERPRET=1 python -m pytest -q -s -p no:cacheprovider \
        results/precision_16bit/attribution_test.py

For two shapes that miss the fixed 16-bit bound, the worst |dq - dq_float64| of: the kernel;
the PyTorch reference path in the same dtype; and float64 computations of dq that take
Delta = rowsum(dO * O) from the exact O or from the kernel's 16-bit O, rounded to the dtype
at the end. Writes attribution.json beside this file.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location(
    "tcca", HERE.parents[1] / "tests" / "ops" / "test_triton_cca.py")
t = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(t)
_bf16_rounds_to_nearest = t._bf16_rounds_to_nearest  # the GPU's rounding, as in the tests
RESULTS = {}


@pytest.mark.parametrize("shape, dtype", [((2, 64, 96, 5, 13, 17), torch.bfloat16),
                                          ((1, 16, 2048, 2, 5, 6), torch.float16)])
def test_attribution(shape, dtype):
    B, cqk, cv, T, H, W = shape
    q, k, v, go = t._inputs(B, cqk, cv, T, H, W, dtype, qk_std=t._qk_std(cqk, 1.0))
    out, lse = t.cca_forward(q, k, v, 1.0)
    dq = t.cca_backward(q, k, v, out, lse, go, 1.0)[0]
    rq = t.dense_grads(q, k, v, go, 1.0)[0]
    path_dq = t._reference_path_grads(q, k, v, go, 1.0)[0]
    n = T * H * W
    qf, kf = q.double().reshape(B, cqk, n), k.double().reshape(B, cqk, n)
    vf, gof = v.double().reshape(B, cv, n), go.double().reshape(B, cv, n)
    e = torch.einsum("bcn,bcm->bnm", qf, kf)
    p = torch.softmax(e.masked_fill(~t._criss_cross_mask(T, H, W, q.device), float("-inf")), -1)
    dp = torch.einsum("bcn,bcm->bnm", gof, vf)

    def worst(x):
        return round((x.double() - rq).abs().max().item(), 4)

    rec = {"kernel": worst(dq), "pytorch_path_same_dtype": worst(path_dq)}
    for name, o in (("float64_dq_delta_from_exact_O", torch.einsum("bnm,bcm->bcn", p, vf)),
                    ("float64_dq_delta_from_kernel_O", out.double().reshape(B, cv, n))):
        ds = p * (dp - (gof * o).sum(1)[:, :, None])
        rec[name] = worst(torch.einsum("bnm,bcm->bcn", ds, kf).reshape(q.shape).to(dtype))
    RESULTS[f"{shape} {str(dtype).replace('torch.', '')}"] = rec
    print(shape, dtype, rec)
    (HERE / "attribution.json").write_text(json.dumps(RESULTS, indent=1) + "\n")
    assert rec["kernel"] == pytest.approx(rec["float64_dq_delta_from_kernel_O"], rel=0.05)

# ruff: noqa: E501
"""GPU diagnosis of the Triton backward (one kernel config per process): errors vs a float64
reference and run-to-run equality, per gradient, on shapes that isolate the failure.

    python results/gpu_h200/diag_backward.py NAME BLOCK_V,WARPS,STAGES [EDIT]  >> diag.jsonl

The record of the diagnosis (diag_run.sh ran it, 9 variants in parallel; output:
diag_backward.jsonl). It ran against the kernel of commit 2854e22, before the fix: its EDITS
patch that source and no longer apply to the fixed kernel.
"""

import json
import os
import sys
import time

os.environ["VIDCCNET_CCA_AUTOTUNE"] = "0"
import torch  # noqa: E402

from vidccnet.ops import triton_cca  # noqa: E402
from vidccnet.ops.reference import cca_reference  # noqa: E402

name, cfg = sys.argv[1], tuple(int(x) for x in sys.argv[2].split(","))
triton_cca.GPU_CONFIGS = (cfg, cfg)
EDITS = {
    # delta = rowsum(dO * O) in its own loop: dO is then only a dot operand in the dP loop
    "delta_loop": [("""            dp += tl.dot(do.to(DOT_TY), tl.trans(vv.to(DOT_TY)), input_precision="ieee")
            if not LAST:
                o = tl.load(
                    OUT + pos0 * CV + rel[:, None] * CV + offs_v[None, :], mask=mask_v, other=0.0
                )
                delta += tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
""", """            dp += tl.dot(do.to(DOT_TY), tl.trans(vv.to(DOT_TY)), input_precision="ieee")
        if not LAST:
            for c1 in range(0, CV, BLOCK_V):
                offs_v = c1 + tl.arange(0, BLOCK_V)
                mask_v = mask[:, None] & (offs_v < CV)[None, :]
                do = tl.load(dob + rel[:, None] * CV + offs_v[None, :], mask=mask_v, other=0.0)
                o = tl.load(OUT + pos0 * CV + rel[:, None] * CV + offs_v[None, :], mask=mask_v,
                            other=0.0)
                delta += tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
""")],
    # V loaded transposed: no tl.trans before the dP dot
    "vt_load": [("""            vv = tl.load(vb + rel[:, None] * CV + offs_v[None, :], mask=mask_v, other=0.0)
            dp += tl.dot(do.to(DOT_TY), tl.trans(vv.to(DOT_TY)), input_precision="ieee")
""", """            vvt = tl.load(vb + rel[None, :] * CV + offs_v[:, None], mask=tl.trans(mask_v),
                          other=0.0)
            dp += tl.dot(do.to(DOT_TY), vvt.to(DOT_TY), input_precision="ieee")
""")],
}
if len(sys.argv) > 3:
    import importlib.util
    import inspect

    src = inspect.getsource(triton_cca._bwd_kernel)
    for old, new in EDITS[sys.argv[3]]:
        assert src.count(old) == 1, old
        src = src.replace(old, new)
    path = f"/tmp/bwd_variant_{name}.py"
    with open(path, "w") as f:
        f.write("import triton.language as tl\n\n\n" + src)
    spec = importlib.util.spec_from_file_location(f"bwd_variant_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    triton_cca._KERNEL_FNS = (triton_cca._fwd_kernel, triton_cca._fwd_fused_kernel, mod._bwd_kernel)
    name += "+" + sys.argv[3]
TOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-4}
F16, BF16 = torch.float16, torch.bfloat16
CASES = [  # (B, Cqk, Cv, T, H, W), dtype
    ((1, 16, 64, 2, 5, 6), F16),     # one BLOCK_V chunk
    ((1, 16, 128, 2, 5, 6), F16),    # two chunks
    ((1, 16, 2048, 2, 5, 6), F16),   # failed on the H200
    ((1, 16, 2048, 2, 1, 6), F16),   # column pass trivial (L = 1)
    ((1, 16, 2048, 2, 6, 1), F16),   # row pass trivial (L = 1)
    ((1, 16, 2048, 2, 5, 6), BF16),
    ((1, 64, 512, 2, 90, 120), F16),  # failed on the H200 (dq 26.8)
]


def excess(a, b, tol):
    a, b = a.double(), b.double()
    return round(((a - b).abs() - (tol + tol * b.abs())).max().item(), 5), round(
        (a - b).abs().max().item(), 5)


dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
for (B, cqk, cv, T, H, W), dtype in CASES[: int(os.environ.get('DIAG_CASES', 99))]:
    rec = {"variant": name, "cfg": cfg, "shape": [B, cqk, cv, T, H, W], "dtype": str(dtype),
           "mma_v3_disabled": os.environ.get("DISABLE_MMA_V3", "")}
    t0 = time.time()
    try:
        g = torch.Generator().manual_seed(0)
        std = cqk ** -0.25
        q, k = (torch.randn(B, cqk, T, H, W, generator=g) * std for _ in range(2))
        v, go = (torch.randn(B, cv, T, H, W, generator=g) for _ in range(2))
        q, k, v, go = (x.to(dev, dtype) for x in (q, k, v, go))
        out, lse = triton_cca.cca_forward(q, k, v, 1.0)
        g1 = triton_cca.cca_backward(q, k, v, out, lse, go, 1.0)
        g2 = triton_cca.cca_backward(q, k, v, out, lse, go, 1.0)
        _, _, dv_only = triton_cca.cca_backward(q, k, v, out, lse, go, 1.0, (False, False, True))
        qr, kr, vr = (x.detach().double().requires_grad_() for x in (q, k, v))
        ro, _ = cca_reference(qr, kr, vr, 1.0)
        ro.backward(go.double())
        tol = TOL[dtype]
        rec["out"] = excess(out, ro.detach(), tol)
        for n, a, r in zip(("dq", "dk", "dv"), g1, (qr.grad, kr.grad, vr.grad)):
            rec[n] = excess(a, r, tol)
        rec["dv_only"] = excess(dv_only, vr.grad, tol)
        rec["repeatable"] = [bool(torch.equal(a, b)) for a, b in zip(g1, g2)]
    except Exception as exc:  # noqa: BLE001
        rec["error"] = repr(exc)[:400]
    try:
        rec["kernel_file"] = triton_cca._kernels()["_bwd_kernel"].fn.__code__.co_filename
    except Exception:  # noqa: BLE001
        pass
    rec["s"] = round(time.time() - t0, 1)
    print(json.dumps(rec), flush=True)

"""Test-session settings shared by every test folder."""

import os

# Triton decides at kernel-definition time whether to interpret: set it before anything imports
# vidccnet.ops.triton_cca, so the fused kernels run on CPU tensors (slowly) in CI.
if not os.environ.get("CUDA_VISIBLE_DEVICES_FOR_TESTS"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

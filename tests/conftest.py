"""Test-session settings shared by every test folder."""

import os

import torch

# Without a GPU the fused Triton kernels run under Triton's interpreter on CPU tensors (slowly).
# Triton reads the flag when a kernel is defined, so it is set before anything imports them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

"""vidccnet: video semantic segmentation with 3D criss-cross attention (CCNet).

Every position (t, h, w) of a clip attends over its time line, its row and its column
(T + H + W - 2 keys, one softmax); recurrent passes spread the context: two reach every
position that shares one of its coordinates (t, h or w), three the whole (T, H, W) volume.

- ``vidccnet.ops.criss_cross_attention(q, k, v)``: the operator, (B, C, T, H, W) in and out
  (fused Triton kernels on CUDA, an exact PyTorch path elsewhere; a ``torch.library`` op).
- ``vidccnet.nn``: ``CrissCrossAttention3d`` and ``RecurrentCrissCrossAttention`` layers.
- ``vidccnet.models.create_model("ccnet3d_resnet50", num_classes)``: clip (B, 3, T, H, W) ->
  logits (B, K, T, H, W); ``list_models()`` names the 3D models and per-frame 2D baselines.
- ``vidccnet.predict.VideoSegmenter(checkpoint)``: streams a video file or frame folder to masks.
- ``vidccnet.data`` (CamVid, VSPW, your own annotated videos, synthetic clips),
  ``vidccnet.losses``, ``vidccnet.metrics`` (mIoU, fwIoU, mVC_n, flicker) and
  ``vidccnet.engine`` (config, training, evaluation).
- Scripts: ``scripts/demo.py``, ``segment_video.py``, ``train.py``, ``evaluate.py``,
  ``export_onnx.py``. Formats and definitions: ``docs/design.md``.
"""

__version__ = "0.1.0"

"""vidccnet: video semantic segmentation with 3D criss-cross attention (CCNet)."""

__version__ = "0.1.0"

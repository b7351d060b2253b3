from setuptools import find_packages, setup

setup(
    name="vidccnet",
    version="0.1.0",
    description="Video semantic segmentation with 3D criss-cross attention (CCNet)",
    packages=find_packages(include=["vidccnet", "vidccnet.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.6",
        "torchvision>=0.21",
        "av>=12",
        "numpy",
        "einops",
        "scipy",
        "pyyaml",
        "tqdm",
        "pillow",
        "matplotlib",
        "tensorboard",
    ],
    extras_require={
        "decord": ["decord; platform_system == 'Linux' and platform_machine == 'x86_64'"],
        "export": ["onnx", "onnxscript", "onnxruntime"],
        "dev": [
            "pytest",
            "pytest-timeout",
            "ruff",
            "decord; platform_system == 'Linux' and platform_machine == 'x86_64'",
            "onnx",
            "onnxscript",
            "onnxruntime",
        ],
    },
)

from setuptools import find_packages, setup

setup(
    name="ilat_ext",
    version="0.1.0",
    description="Image Local Autoregressive Transformer (iLAT) for taming-transformers on PyTorch 2 / Lightning 2",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["ilat_ext", "ilat_ext.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.1,<3",
        "torchvision>=0.16",
        "pytorch-lightning>=2.1,<3",
        "omegaconf>=2.1",
        "x-transformers>=1.0",
        "einops>=0.6",
        "opencv-python-headless>=4.5",
        "taming-transformers==0.0.1",
        "requests",
        "numpy",
        "scipy",          # Penn Action .mat label files
        "pillow",
        "tqdm",
        "tensorboard",
    ],
    extras_require={"test": ["pytest>=7", "scikit-image>=0.19"]},  # scikit-image: the SSIM reference in tests
    entry_points={"console_scripts": ["ilat-main=ilat_ext.main:main"]},
)

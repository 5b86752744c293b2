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
    extras_require={
        "editor": ["gradio>=6.0,<7"],                            # ilat-editor, the browser editor
        # scikit-image: the SSIM reference; playwright drives Debian's chromium in the editor's browser tests
        "test": ["pytest>=7", "scikit-image>=0.19", "gradio>=6.0,<7", "playwright>=1.40"],
    },
    # scripts/<name>.py run the same commands from a checkout (python scripts/edit_face.py ...)
    entry_points={"console_scripts": [
        "ilat-main=ilat_ext.main:main",
        "ilat-edit-face=ilat_ext.cli.edit_face:main",
        "ilat-editor=ilat_ext.cli.editor:main",
        "ilat-compare=ilat_ext.cli.compare:main",
        "ilat-pose-guide=ilat_ext.cli.pose_guide:main",
        "ilat-demo-faces=ilat_ext.cli.demo_faces:main",
        "ilat-demo-poses=ilat_ext.cli.demo_poses:main",
        "ilat-eval-tsvqgan=ilat_ext.cli.eval_tsvqgan:main",
        "ilat-quantize-dataset=ilat_ext.cli.quantize_dataset:main",
        "ilat-generate-masks=ilat_ext.cli.generate_masks:main",
        "ilat-generate-xdog-sketch=ilat_ext.cli.generate_xdog_sketch:main",
        "ilat-write-split-flists=ilat_ext.cli.write_split_flists:main",
        "ilat-build-sdf=ilat_ext.cli.build_sdf:main",
        "ilat-benchmark-encoder=ilat_ext.cli.benchmark_encoder:main",
        "ilat-benchmark-sampling=ilat_ext.cli.benchmark_sampling:main",
        "ilat-convert-release=ilat_ext.cli.convert_release:main",
        "ilat-benchmark-edit=ilat_ext.cli.benchmark_edit:main",
    ]},
)

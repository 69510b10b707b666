#!/usr/bin/env bash
# Download, here (where the package registry is reachable), exactly the wheels that
# scripts/gpu_check.sh installs on a GPU host, into .gpu-wheels/ (ignored by git), and
# print their total size. The GPU machine has no package index; what it lacks travels with the
# working tree, 64 MiB in all (the tree itself is ~1.3 MB: `git ls-files` plus untracked files).
#
#   bash scripts/gpu_wheels.sh            # -> .gpu-wheels/*.whl (+ SHA256SUMS), total size
#
# The GPU machine: Python 3.12.3 (/opt/torch/.venv/bin/python3), torch 2.11.0+cu130,
# transformers 5.17.0, tokenizers 0.23.2, huggingface_hub 1.33.0, numpy 2.5.2, accelerate 1.15.0,
# peft, safetensors, sentencepiece, scipy, scikit-learn, numba, pandas, pyarrow, xxhash, fsspec,
# joblib, lazy-loader, msgpack, six, httpx, prometheus-client, psutil, pyyaml, pytest, anyio, h11,
# click, annotated-doc, tiktoken, regex, matplotlib ... (the image's package list). Not there:
# fastapi, starlette, uvicorn, pydantic and everything below.
#
# Decisions (each verified in a scratch venv without system site-packages holding the machine's
# versions where they exist, running the three adapters, the server and the offline references):
#
# * transformers 5.17 + tokenizers 0.23 (the machine's) CANNOT serve this server: FlagEmbedding
#   1.4.2 imports and bge-m3 loads, but transformers 5's tokenizers have no
#   build_inputs_with_special_tokens, which server/reranker/model.py (pair template) and
#   server/embedding/model.py (wrap_ids) call ("AttributeError: XLMRobertaTokenizer has no
#   attribute build_inputs_with_special_tokens" at reranker load). So our pins travel:
#   transformers 4.57.6, tokenizers 0.22.2 (4.57.6 checks tokenizers<=0.23.0 at import) and
#   huggingface_hub 0.36.2 (4.57.6 requires hub<1.0). They shadow the machine's versions.
# * av (PyAV, bundled FFmpeg) is unavoidable: server/asr/audio.py imports it at module
#   level and server.app imports the transcription route, so no server starts without it.
# * silero-vad 6.2.3's wheel is 11.3 MB, of which ~11 MB are model files the server never opens:
#   seven ONNX variants and a safetensors copy; the server loads only silero_vad.jit
#   (load_silero_vad(onnx=False) in server/asr/vad.py). With the plain wheel the set is
#   ~75 MB, over the 64 MiB (67.1 MB) a call carries, so it travels trimmed: the same wheel
#   without data/*.onnx and data/*.safetensors, its RECORD rewritten, relabelled 6.2.3+jitonly
#   (~2.1 MB). The package imports and load_silero_vad() loads as from the plain wheel (checked
#   below on the trimmed wheel). Every other wheel travels as published.
# * funasr 1.4.16 imports every submodule and records failures, so SenseVoiceSmall registers only
#   when funasr.models.sense_voice.model imports: that needs rapidfuzz (paraformer.search),
#   kaldiio + librosa (funasr.utils.load_utils, imported by server/asr/quiet_funasr.py),
#   omegaconf + hydra-core + antlr4 (funasr.auto), kaldi-native-fbank (front end). librosa's
#   presence makes transformers' audio_utils import soxr, so soxr travels too. librosa's own heavy
#   needs (numba, scipy, scikit-learn, joblib, lazy-loader, msgpack) are on the machine;
#   soundfile, audioread, pooch are never imported on this path. torch-complex, jieba, jamo,
#   jaconv, modelscope, tensorboardX, websockets: funasr submodules that need them fail to import
#   and are skipped (funasr prints "Please install torch_complex firstly"), none is on the path.
# * FlagEmbedding 1.4.2's package import reaches its fine-tuning modules: datasets 4.0.0 (+ dill,
#   multiprocess; pyarrow, pandas, xxhash, fsspec are on the machine) and peft (on the machine).
#   sentence-transformers and ir-datasets are declared but not imported for inference.
# * fastapi 0.165 imports opentelemetry-api (its telemetry module) and orjson; pydantic-settings
#   imports python-dotenv.
#
# Every wheel is fetched with --no-deps: the list below IS the closure. Sizes (cp312 manylinux
# x86_64, as downloaded 2026-12) are printed by this script and recorded in the report.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.gpu-wheels
PY=${PYTHON:-.venv/bin/python}

WHEELS=(
  # the server's web stack
  fastapi==0.165.0 fastapi-offline==1.7.7 starlette==1.10.0 uvicorn==0.54.0
  python-multipart==0.0.34 sse-starlette==3.7.1 pydantic==2.14.4 pydantic-core==2.50.5
  pydantic-settings==2.16.3 python-dotenv==1.2.4 typing-inspection==0.4.5 annotated-types==0.8.0
  opentelemetry-api==1.45.3 orjson==3.13.0
  # bge-m3 and the reranker
  FlagEmbedding==1.4.2 transformers==4.57.6 tokenizers==0.22.2 huggingface-hub==0.36.2
  datasets==4.0.0 dill==0.3.8 multiprocess==0.70.16
  # SenseVoiceSmall, audio decoding, speech detection
  funasr==1.4.16 kaldi-native-fbank==1.23.0 kaldiio==2.18.1 librosa==0.11.0 soxr==1.1.0
  rapidfuzz==3.14.6 omegaconf==2.3.1 hydra-core==1.3.8
  av==18.1.0 silero-vad==6.2.3
)
# Sizes as downloaded (cp312 manylinux x86_64 where compiled), MB: av 35.79, transformers 11.99,
# silero-vad 11.32 (2.1 trimmed), tokenizers 3.27, rapidfuzz 3.17, pydantic-core 2.26, funasr 1.00,
# fastapi-offline 0.78, huggingface-hub 0.57, kaldi-native-fbank 0.51, pydantic 0.49, datasets 0.49,
# librosa 0.26, FlagEmbedding 0.25, soxr 0.24, hydra-core 0.17, fastapi 0.16, multiprocess 0.15,
# antlr4 0.14, orjson 0.13, dill 0.12, the other eleven < 0.1 each.

rm -rf "$DEST"
mkdir -p "$DEST"
# manylinux2014 == manylinux_2_17; newer wheels (av, orjson, rapidfuzz...) carry _2_27/_2_28 tags,
# and pip matches each N exactly, so all of them are named. The GPU machine (Ubuntu 24.04, glibc
# 2.39) takes any of these.
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
  --platform manylinux1_x86_64 -d "$DEST" "${WHEELS[@]}"
# omegaconf 2.3 pins antlr4-python3-runtime==4.9.*, published only as a source archive (pure
# Python): build its py3-none-any wheel here, from the registry's sdist, with no dependencies.
"$PY" -m pip wheel --quiet --no-deps --no-binary antlr4-python3-runtime -w "$DEST" antlr4-python3-runtime==4.9.3
WHEELS+=(antlr4-python3-runtime==4.9.3)

# silero-vad without the model files the server does not load (see above).
"$PY" - "$DEST" <<'PYTHON'
import base64, hashlib, pathlib, sys, zipfile

dest = pathlib.Path(sys.argv[1])
(src,) = dest.glob("silero_vad-6.2.3-py3-none-any.whl")
old, new = "6.2.3", "6.2.3+jitonly"
out = dest / src.name.replace(old, new)
drop = lambda name: name.startswith("silero_vad/data/") and name.endswith((".onnx", ".safetensors"))
record = []
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
    for info in zin.infolist():
        name = info.filename
        if drop(name) or name.endswith(".dist-info/RECORD"):
            continue
        data = zin.read(name)
        name = name.replace(f"silero_vad-{old}.dist-info", f"silero_vad-{new}.dist-info")
        if name.endswith(".dist-info/METADATA"):
            data = data.replace(f"Version: {old}\n".encode(), f"Version: {new}\n".encode(), 1)
        zout.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"silero_vad-{new}.dist-info/RECORD,,")
    zout.writestr(f"silero_vad-{new}.dist-info/RECORD", "\n".join(record) + "\n")
src.unlink()
with zipfile.ZipFile(out) as z:
    assert "silero_vad/data/silero_vad.jit" in z.namelist()
    assert f"Version: {new}" in z.read(f"silero_vad-{new}.dist-info/METADATA").decode()
PYTHON
# The trimmed package loads its TorchScript model (here, with this Python; the code is the same).
rm -rf /tmp/gpu-wheels-silero && "$PY" -m pip install --quiet --no-deps --no-index --target /tmp/gpu-wheels-silero \
  "$DEST"/silero_vad-6.2.3+jitonly-py3-none-any.whl
PYTHONPATH=/tmp/gpu-wheels-silero "$PY" -c "import silero_vad; silero_vad.load_silero_vad(onnx=False); \
print('trimmed silero-vad', silero_vad.__version__, 'loads its TorchScript model')"
rm -rf /tmp/gpu-wheels-silero

count=$(ls "$DEST"/*.whl | wc -l)
if [ "$count" -ne "${#WHEELS[@]}" ]; then
  echo "expected ${#WHEELS[@]} wheels, got $count" >&2
  exit 1
fi
# Every wheel installs on the GPU machine's interpreter (CPython 3.12, glibc 2.39): tags checked by pip.
"$PY" -m pip install --quiet --dry-run --no-index --no-deps --ignore-installed --only-binary=:all: \
  --python-version 3.12 --implementation cp --platform manylinux_2_39_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --target /tmp/gpu-wheels-dry-run "$DEST"/*.whl
# Every requirement the wheels declare is met by another carried wheel or by the machine's packages,
# or is one the check's import path never reaches (verified in a scratch venv): see the list there.
"$PY" - "$DEST" <<'PYTHON'
import sys, zipfile, pathlib, email.parser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

# The GPU machine's packages (KINDS.md, "Python packages already there"), with the versions known.
MACHINE = set(canonicalize_name(n) for n in """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal
annotated-doc anyio attrs certifi charset-normalizer click cloudpickle colorama contourpy coverage
filelock fsspec h11 hf-xet httpcore httpx huggingface-hub idna jinja2 joblib lazy-loader llvmlite
markupsafe matplotlib mpmath msgpack networkx numba numpy packaging pandas peft pillow pip pluggy
prometheus-client propcache protobuf psutil pyarrow pytest python-dateutil pyyaml regex requests rich
safetensors scikit-learn scipy sentence-transformers sentencepiece setuptools six sympy threadpoolctl
tiktoken tokenizers torch torchaudio tqdm transformers typing-extensions urllib3 xxhash yarl zipp""".split())
KNOWN = {"numpy": "2.5.2", "torch": "2.11.0", "safetensors": "0.8.0", "accelerate": "1.15.0"}
# Declared but never imported on the check's path (server, adapters, offline references, tests):
# verified by running all of them in a scratch venv that lacked these.
UNUSED = set(canonicalize_name(n) for n in """ir-datasets umap-learn oss2 modelscope jieba jamo jaconv
torch-complex tensorboardx websockets soundfile audioread pooch decorator standard-aifc standard-sunau""".split())
marker_env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
              "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
carried = {}
metas = {}
for whl in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(z.read(name).decode())
    carried[canonicalize_name(meta["Name"])] = Version(meta["Version"])
    metas[meta["Name"]] = meta.get_all("Requires-Dist") or []
problems, unused = [], set()
for dist, reqs in metas.items():
    for line in reqs:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(marker_env):
            continue
        key = canonicalize_name(req.name)
        if key in carried:
            if not req.specifier.contains(carried[key], prereleases=True):
                problems.append(f"{dist}: {req} but {carried[key]} travels")
        elif key in MACHINE:
            if key in KNOWN and not req.specifier.contains(KNOWN[key], prereleases=True):
                problems.append(f"{dist}: {req} but the machine has {KNOWN[key]}")
        elif key in UNUSED:
            unused.add(f"{key} ({dist})")
        else:
            problems.append(f"{dist}: {req} is neither carried nor on the machine")
print(f"{len(carried)} wheels; every declared requirement met, except those never imported on this path: "
      + ", ".join(sorted(unused)))
if problems:
    sys.exit("unmet requirements:\n  " + "\n  ".join(problems))
PYTHON
(cd "$DEST" && sha256sum *.whl > SHA256SUMS)
ls -l "$DEST"/*.whl | awk '{printf "%8.2f MB  %s\n", $5 / 1e6, $9}' | sort -rn
wheels=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null \
        | awk '$2 == "total" {s += $1} END {print s}')
awk -v w="$wheels" -v t="$tree" 'BEGIN {
  printf "wheels %.2f MB, tree %.2f MB, together %.2f MB of 67.11 MB (64 MiB)\n", w / 1e6, t / 1e6, (w + t) / 1e6 }'
if [ $((wheels + tree)) -gt $((64 * 1024 * 1024)) ]; then
  echo "over the 64 MiB a device call carries" >&2
  exit 1
fi

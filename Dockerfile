# CPU image: Python 3.11 and PyTorch's CPU build (no CUDA libraries, a much smaller image).
#
#   docker build -t inference-server:cpu .
#   docker run --rm -p 8000:8000 -v "$PWD/models:/models" inference-server:cpu
#
# Weights are not in the image: mount a models directory at /models (see docs/deployment.md).
# --build-arg BAKE_MODELS=1 downloads them into the image at build time instead.
# For a GPU, use Dockerfile.cuda.

FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG BAKE_MODELS=0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# torch first, from PyTorch's CPU index, so that installing the package below keeps it.
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /opt/inference-server
COPY pyproject.toml README.md ./
COPY server ./server
RUN pip install --no-cache-dir .

# An unprivileged user (numeric, so Kubernetes' runAsNonRoot can check it) owns /models.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/app --create-home app \
    && mkdir -p /models \
    && chown 10001:10001 /models
USER 10001:10001

ENV HOME=/home/app \
    INFERENCE_HOST=0.0.0.0 \
    INFERENCE_PORT=8000 \
    INFERENCE_MODELS_DIR=/models

# Optional: bake the weights into the image (several GB), for hosts that cannot mount a volume.
RUN if [ "${BAKE_MODELS}" = "1" ]; then inference-server download --models-dir /models; fi

EXPOSE 8000
# /health answers as soon as the process serves (models may still be loading; /ready tells that).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('INFERENCE_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["inference-server"]
CMD ["serve"]

# syntax=docker/dockerfile:1
# ExplainServe server image. Two variants from one file (docs/operations.md#the-image):
#   docker build --build-arg VARIANT=cpu -t explainserve:cpu .   # CPU-only PyTorch wheels
#   docker build --build-arg VARIANT=gpu -t explainserve:gpu .   # CUDA PyTorch wheels
# The CUDA wheels carry the CUDA runtime, cuDNN and cuBLAS as pip packages, so the GPU variant
# needs no CUDA base image: the NVIDIA container toolkit mounts the driver at run time.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG VARIANT=cpu

# ---- build: a virtual environment with torch, the client package and the server -------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

FROM build AS torch-cpu
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

FROM build AS torch-gpu
# PyPI's Linux x86_64 torch wheels are the CUDA builds.
ENV TORCH_INDEX_URL=https://pypi.org/simple

FROM torch-${VARIANT} AS builder
# The README's install, in two layers so the large torch layer survives source changes:
# the same pins, the client package and the server, neither editable nor with test extras.
RUN PIP_INDEX_URL="$TORCH_INDEX_URL" pip install torch==2.14.1 torchvision==0.29.1
WORKDIR /src
COPY client/ client/
COPY pyproject.toml README.md ./
COPY server/ server/
# Readable by the unprivileged runtime user whatever modes the sources had.
RUN pip install ./client . && chmod -R a+rX /opt/venv

# ---- runtime: the virtual environment alone, run by an unprivileged user ---------------------
FROM ${PYTHON_IMAGE} AS runtime-cpu

FROM ${PYTHON_IMAGE} AS runtime-gpu
# What the NVIDIA container toolkit reads when the image runs outside Kubernetes.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM runtime-${VARIANT} AS runtime
ARG VARIANT
LABEL org.opencontainers.image.title="explainserve" \
      org.opencontainers.image.description="gRPC service that explains PyTorch vision models" \
      io.explainserve.variant="${VARIANT}"
# UID 10001, group 0: runs as non-root under any runAsUser policy (and OpenShift's random UIDs).
RUN useradd --uid 10001 --gid 0 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin explainserve \
    && mkdir -p /models/weights /opt/explainserve
COPY --from=builder /opt/venv /opt/venv
# The demo model's weights and labels ship inside the installed package; this link gives a
# model repository a stable path to name them by (deploy/base/models.toml does).
RUN ln -s "$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/explainserve/models/demo/assets" \
          /opt/explainserve/demo \
    && test -f /opt/explainserve/demo/demo.safetensors
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    EXPLAINSERVE_LOG_FORMAT=json \
    EXPLAINSERVE_HEALTH_ADDRESS=127.0.0.1:50051
# Models: mount a repository at /models (models.toml, weights under /models/weights) and pass
# `--models /models/models.toml`; without --models the built-in demo model is served.
WORKDIR /models
USER 10001:0
# 50051 gRPC (ExplainerService, health, reflection); 9090 Prometheus metrics.
EXPOSE 50051 9090
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "explainserve.cli.healthcheck"]
# Arguments given to `docker run` / a pod's `args` are appended; a later flag wins.
ENTRYPOINT ["explainserve", "serve", "--host", "0.0.0.0", "--port", "50051", "--metrics-port", "9090"]
CMD []

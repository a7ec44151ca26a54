# syntax=docker/dockerfile:1.7
#
# Two variants from one file:
#   docker build --build-context shared=../shared -t storefront-inference:cpu .
#   docker build --build-context shared=../shared --build-arg VARIANT=gpu \
#       --build-arg EXTRA_RECIPES=review-sentiment.fp16-cuda.yaml -t storefront-inference:gpu .
# The `shared` build context supplies ../shared/data (the labelled data the default sentiment model is
# fine-tuned on). Versions already present in model_store/ are copied, not rebuilt.
#
# Without a registry (podman, as tests/ops/test_image.py builds it): a locally bootstrapped Debian base with
# python3 as PYTHON_IMAGE, and the model store already built on the host:
#   podman build --build-arg PYTHON_IMAGE=localhost/debian-python:bookworm \
#       --build-arg STORE_FROM=prebuilt-store --target runtime -t localhost/storefront-inference .

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
# `store` builds the default model store in the image; `prebuilt-store` copies model_store/ as it is.
ARG STORE_FROM=store

# ---------------------------------------------------------------------------------------------------
# store: the conversion toolchain (torch, transformers, optimum-onnx) builds the default model store.
# Nothing from this stage but model_store/ reaches the runtime image.
# store-deps is its install step alone (tests/ops/test_image.py builds it without the data).
FROM ${PYTHON_IMAGE} AS store-deps
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# A folder holding the torch 2.13.0 CPU wheel, used instead of TORCH_INDEX_URL when set (a machine whose
# only reachable index is PyPI, which has the CUDA build alone); and a CA bundle for pip, as below.
ARG TORCH_WHEELS=""
ARG PIP_CERT=""
# A virtual environment, as in the runtime stage: a Debian base has no pip of its own (and refuses to let
# pip write into its Python).
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /build/main
COPY pyproject.toml README.md ./
COPY app/ app/
COPY conversion/ conversion/
# The CPU wheel of torch: the default index would pull a multi-GB CUDA build into a throw-away stage.
# DL3013: the project itself is installed from its source tree; its dependencies are pinned in pyproject.
# hadolint ignore=DL3013
RUN if [ -z "${PIP_CERT}" ]; then unset PIP_CERT; fi \
    && if [ -n "${TORCH_WHEELS}" ]; then \
         pip install --no-index --find-links "${TORCH_WHEELS}" --no-deps torch==2.13.0 \
         && pip install torch==2.13.0; \
       else pip install torch==2.13.0 --index-url "${TORCH_INDEX_URL}"; fi \
    && pip install ".[convert]" \
    && pip install --no-deps recbole==1.2.1

FROM store-deps AS store
COPY model_store/ model_store/
# Recipes (file names in model_store/recipes/) built after the defaults, each as the next version of its
# model: the GPU image adds the fp16 sentiment model, which k8s/overlays/gpu pins.
ARG EXTRA_RECIPES=""
# ../shared relative to the checkout is /build/shared here, as on a developer's machine.
RUN --mount=type=bind,from=shared,source=data,target=/build/shared/data \
    python -m conversion.cli build-defaults --store model_store \
    && for recipe in ${EXTRA_RECIPES}; do \
         python -m conversion.cli build --recipe "model_store/recipes/${recipe}" --store model_store; \
       done

# prebuilt-store: model_store/ of the build context as it is (built on the host by `make store`).
FROM scratch AS prebuilt-store
COPY model_store/ /build/main/model_store/

# DL3006: ${STORE_FROM} is one of the two stages above.
# hadolint ignore=DL3006
FROM ${STORE_FROM} AS chosen-store

# ---------------------------------------------------------------------------------------------------
# Runtime bases: the same layout on both, so the final stage does not care which one it got.
FROM ${PYTHON_IMAGE} AS base-cpu
ENV INFERENCE_PROVIDER=cpu
RUN python -m venv /opt/venv

FROM ${CUDA_IMAGE} AS base-gpu
ENV INFERENCE_PROVIDER=cuda
# DL3008: python3 follows the CUDA image's Ubuntu release, which the CUDA_IMAGE tag already pins.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# ---------------------------------------------------------------------------------------------------
# runtime: serving dependencies only (`pip install .` without extras: no torch, no transformers).
# DL3006: base-${VARIANT} is one of the stages above, not an image from a registry.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG VARIANT
# A CA bundle for pip inside the build, where the host's is mounted elsewhere (podman; see the test).
ARG PIP_CERT=""
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    INFERENCE_MODEL_STORE=/models
WORKDIR /tmp/src
COPY pyproject.toml README.md ./
COPY app/ app/
COPY conversion/ conversion/
# The GPU variant swaps the CPU onnxruntime wheel for onnxruntime-gpu (both provide `onnxruntime`).
RUN if [ -z "${PIP_CERT}" ]; then unset PIP_CERT; fi \
    && pip install . \
    && if [ "${VARIANT}" = "gpu" ]; then \
         pip uninstall -y onnxruntime && pip install "onnxruntime-gpu==1.31.*"; \
       fi \
    && rm -rf /tmp/src
WORKDIR /srv
COPY --from=chosen-store /build/main/model_store/ /models/
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin inference
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
# Exec form: the server (python -m app: uvicorn with the production options) is PID 1 and receives
# SIGTERM itself, so the service drains before it exits.
ENV INFERENCE_HOST=0.0.0.0 INFERENCE_PORT=8000
CMD ["python", "-m", "app"]

# syntax=docker/dockerfile:1
# The one image every Kubeflow Pipelines step runs. The compiled pipeline spec sets each step's
# command (python -m components.kfp_entrypoint ..., our wrapper of TFX's KFP v2 entrypoint), so the
# image only has to provide Python, the locked dependencies and our packages (pipelines, components,
# simulator) importable by package path. The recurring submitter (manifests/kfp/recurring-run.yaml)
# runs it too, with the pipeline package compiled in at build time.
#
#   docker build --build-arg PIPELINE_IMAGE=ghcr.io/your-org/shop-ranking:0.1.0 \
#     -t ghcr.io/your-org/shop-ranking:0.1.0 .
#
# linux/amd64 only: requirements.lock is resolved for x86_64-manylinux_2_28.
# The base is pinned by tag. For a reproducible base pin its digest as well and bump it on purpose:
#   --build-arg BASE_IMAGE=python:3.10-slim-bookworm@sha256:<digest>
# (`docker buildx imagetools inspect python:3.10-slim-bookworm` prints the digest). Without a
# registry, tests/podman.py builds on a local stand-in of it the same way (make images).
ARG BASE_IMAGE=python:3.10-slim-bookworm

# Builder: the locked environment in /opt/venv. Some locked packages are sdists with C/C++
# extensions (pyfarmhash, crcmod, ...) and the slim base has no compiler, so they are built here;
# the final image copies the venv and gets no compiler.
FROM ${BASE_IMAGE} AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m pip install --no-cache-dir uv==0.13.9
# This is the project's one lock, hash-checked, exactly what the tests ran with; it is the dev
# lock, so pytest, ruff, jupyterlab, papermill, matplotlib and moto ride along (small next to
# TensorFlow). `sync` installs exactly the lock into the venv (uv itself included, so the final
# image installs with it). Rebuilt only when the lock changes.
COPY requirements.lock /tmp/requirements.lock
RUN uv venv --python /usr/local/bin/python3.10 /opt/venv \
    && uv pip sync --python /opt/venv/bin/python --no-cache --compile-bytecode \
    /tmp/requirements.lock \
    && rm /tmp/requirements.lock
# Unique per run of the steps above: the final stage copies it first, so its venv layer is redone
# exactly when the builder's venv was (see there).
RUN cat /proc/sys/kernel/random/uuid > /opt/venv/.build-id

FROM ${BASE_IMAGE}

ARG VERSION=0.1.0
ARG SOURCE=https://github.com/your-org/shop-ranking
# The image the compiled package's steps run (kubeflow.image). Empty: settings/conf/kubeflow.yaml's value.
# Pass the tag being built, so the baked package and the image it runs in agree.
ARG PIPELINE_IMAGE=

LABEL org.opencontainers.image.title="shop-ranking" \
      org.opencontainers.image.description="TFX 1.16 ranking pipeline for Kubeflow Pipelines v2" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# Plain KEY=VALUE pairs on one line, no quotes, no continuation (tests/unit/test_manifests.py reads
# the ENV lines: the image's environment mirrors the local one). TF 2.16 must use tf-keras (Keras 2).
ENV TF_USE_LEGACY_KERAS=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# The locked environment (/opt/venv) comes first on PATH: python, uv, shop-pipeline, ...
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin

# Dependencies in their own layer, redone only when the builder's venv is (the lock changed): its
# bytecode comes along and stays valid (same paths, mtimes kept). A bind-mounted copy, not
# `COPY --from=builder /opt/venv`: podman hashes a COPY's whole source (3.8 GB) on every build to
# look up its cache, about a minute. podman may reuse a cached RUN although a stage it mounts
# changed (containers/buildah#4522), hence the build id copied first: a new one misses the cache.
COPY --from=builder /opt/venv/.build-id /opt/venv/.build-id
RUN --mount=type=bind,from=builder,source=/opt/venv,target=/mnt/venv cp -a /mnt/venv/. /opt/venv/

# Our packages, non-editable: the code lives in site-packages, so every step imports it by package
# path from any working directory. The build backend (setuptools, wheel) is in the lock, so no
# isolated build environment is downloaded. The source copy is removed afterwards.
COPY pyproject.toml README.md /tmp/src/
COPY contract /tmp/src/contract
COPY settings /tmp/src/settings
COPY components /tmp/src/components
COPY pipelines /tmp/src/pipelines
COPY simulator /tmp/src/simulator
COPY serving /tmp/src/serving
COPY monitoring /tmp/src/monitoring
RUN uv pip install --python /opt/venv/bin/python --no-cache --compile-bytecode --no-deps \
    --no-build-isolation /tmp/src \
    && rm -rf /tmp/src

# A non-root user with a fixed numeric id (runAsNonRoot can only verify a numeric USER). The KFP v2
# launcher writes input artifacts under /gcs, /minio and /s3 (kubeflow/pipelines#5673), so those
# are made writable for it. The PVC's top directories are handed to this uid by the
# shop-ranking-store-init Job (manifests/kfp/pvc.yaml).
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
    && mkdir -p /gcs /minio /s3 \
    && chown 10001:10001 /gcs /minio /s3

WORKDIR /app
# The package the CronJob submits, compiled at build time (no network, about 40 s). `--config
# kubeflow` is settings/conf/kubeflow.yaml inside the installed package (package data).
RUN shop-pipeline compile --config kubeflow \
    ${PIPELINE_IMAGE:+--set kubeflow.image=$PIPELINE_IMAGE} \
    --output /app/outputs/kubeflow/shop-ranking.yaml

USER 10001:10001

# The compiled spec (and the CronJob) set the command; by itself the image starts Python.
ENTRYPOINT []
CMD ["python"]

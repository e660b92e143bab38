# syntax=docker/dockerfile:1
# The one image every Kubeflow Pipelines step runs. The compiled pipeline spec sets each step's
# command (python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor ...), so the
# image only has to provide Python, the locked dependencies and our packages (pipelines, components,
# simulator) importable by package path. The recurring submitter (manifests/kfp/recurring-run.yaml)
# runs it too, with the pipeline package compiled in at build time.
#
#   docker build --build-arg PIPELINE_IMAGE=ghcr.io/your-org/shop-ranking:0.1.0 \
#     -t ghcr.io/your-org/shop-ranking:0.1.0 .
#
# linux/amd64 only: requirements.lock is resolved for x86_64-manylinux_2_28.
# The base is pinned by tag. For a reproducible base pin its digest as well and bump it on purpose:
#   FROM python:3.10-slim-bookworm@sha256:<digest>
# (`docker buildx imagetools inspect python:3.10-slim-bookworm` prints the digest).
FROM python:3.10-slim-bookworm

ARG VERSION=0.1.0
ARG SOURCE=https://github.com/your-org/shop-ranking
# The image the compiled package's steps run (kubeflow.image). Empty: conf/kubeflow.yaml's value.
# Pass the tag being built, so the baked package and the image it runs in agree.
ARG PIPELINE_IMAGE=

LABEL org.opencontainers.image.title="shop-ranking" \
      org.opencontainers.image.description="TFX 1.16 ranking pipeline for Kubeflow Pipelines v2" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# Plain KEY=VALUE pairs on one line, no quotes, no continuation: tests/kfp_harness.py reads the ENV
# lines to run commands with the image's environment. TF 2.16 must use tf-keras (Keras 2).
ENV TF_USE_LEGACY_KERAS=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2

RUN python -m pip install --no-cache-dir uv==0.13.9

# Dependencies in their own layer, rebuilt only when the lock changes. This is the project's one
# lock, hash-checked, exactly what the tests ran with; it is the dev lock, so pytest, ruff,
# jupyterlab, papermill and matplotlib ride along (small next to TensorFlow). `sync` also removes
# what the lock lacks, e.g. the base image's pip; uv does the installing from here on.
COPY requirements.lock /tmp/requirements.lock
RUN uv pip sync --system --no-cache --compile-bytecode /tmp/requirements.lock \
    && rm /tmp/requirements.lock

# Our packages, non-editable: the code lives in site-packages, so every step imports it by package
# path from any working directory. The build backend (setuptools, wheel) is in the lock, so no
# isolated build environment is downloaded. The source copy is removed afterwards.
COPY pyproject.toml README.md /tmp/src/
COPY pipelines /tmp/src/pipelines
COPY components /tmp/src/components
COPY simulator /tmp/src/simulator
COPY serving /tmp/src/serving
COPY monitoring /tmp/src/monitoring
RUN uv pip install --system --no-cache --compile-bytecode --no-deps --no-build-isolation /tmp/src \
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
# load_config resolves `--config NAME` against the directory above the installed `pipelines`
# package (site-packages in this image), so the image passes the config by path.
COPY conf /app/conf

# The package the CronJob submits, compiled at build time (no network, about 40 s).
RUN shop-pipeline compile --config /app/conf/kubeflow.yaml \
    ${PIPELINE_IMAGE:+--set kubeflow.image=$PIPELINE_IMAGE} \
    --output /app/outputs/kubeflow/shop-ranking.yaml

USER 10001:10001

# The compiled spec (and the CronJob) set the command; by itself the image starts Python.
ENTRYPOINT []
CMD ["python"]

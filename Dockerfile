# One image for all eight services; docker-compose.yml picks the service per container with
# `python -m services.<pkg>` (ingest, feature, trainer, registry, inference, feedback, drift, bandit_router).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLOPS_HOME=/data \
    MLOPS_HOST=0.0.0.0

WORKDIR /app

# torch first, alone and pinned, from the CPU index: any other spec pulls a multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# The rest of the pinned dependencies (a layer that changes only with the lock file).
COPY requirements.lock ./
RUN pip install -r requirements.lock

# The project itself, editable so that generated code under libs/mlops/v1 is importable,
# then the protobuf code generated from proto/ (gitignored, so never copied in).
COPY . .
RUN pip install --no-deps -e . \
    && python -m mlops.protogen /app

# Run unprivileged; /data is MLOPS_HOME (a named volume inherits this ownership on first use).
RUN useradd --system --create-home --uid 10001 --shell /usr/sbin/nologin mlops \
    && mkdir -p /data \
    && chown -R mlops:mlops /data
USER mlops
VOLUME ["/data"]

# HTTP 8101-8108, gRPC 9101-9108 (the contract's defaults).
EXPOSE 8101-8108 9101-9108

CMD ["mlops", "--help"]

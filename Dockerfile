# syntax=docker/dockerfile:1
# omnistitch image: one image, one process per container (worker, collector, lag-exporter...).
#
# The virtualenv is built at the path it runs from (/opt/omnistitch): a venv's scripts
# carry its absolute path in their shebang, so a venv copied elsewhere does not start.
FROM python:3.11-slim AS build
ENV UV_PROJECT_ENVIRONMENT=/opt/omnistitch \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --no-editable
COPY README.md ./
COPY omnistitch omnistitch
COPY pipeline pipeline
COPY connectors connectors
COPY schemas schemas
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim
LABEL org.opencontainers.image.title="omnistitch" \
      org.opencontainers.image.description="Real-time identity stitching on Kafka and faust" \
      org.opencontainers.image.licenses="Apache-2.0"
# A numeric, non-root user: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 omnistitch \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/omnistitch \
        --shell /usr/sbin/nologin omnistitch \
 && mkdir -p /var/lib/omnistitch \
 && chown 10001:10001 /var/lib/omnistitch
COPY --from=build /opt/omnistitch /opt/omnistitch
ENV PATH=/opt/omnistitch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMNISTITCH_STATE_DIR=/var/lib/omnistitch
WORKDIR /var/lib/omnistitch
USER 10001:10001
# worker API, collector, lag exporter; connectors: twilio, webchat, meta, cti, email (SMTP, HTTP)
EXPOSE 6066 8088 9309 8091 8092 8093 8094 8025 8095
ENTRYPOINT ["omnistitch"]
CMD ["--help"]

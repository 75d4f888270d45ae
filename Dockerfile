# omnistitch image: one image, one process per container (worker, collector, ...).
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY omnistitch omnistitch
COPY pipeline pipeline
COPY connectors connectors
COPY schemas schemas
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 omnistitch
COPY --from=build /src/.venv /opt/omnistitch
ENV PATH=/opt/omnistitch/bin:$PATH OMNISTITCH_STATE_DIR=/var/lib/omnistitch
RUN mkdir -p /var/lib/omnistitch && chown omnistitch /var/lib/omnistitch
USER omnistitch
ENTRYPOINT ["omnistitch"]
CMD ["--help"]

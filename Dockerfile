# One image for every signq role: worker, scheduler, callbacks receiver, emulator, CLI.
#   docker build -t signq .
#   docker run --rm signq --help
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker ./worker
# With the otel extra: tracing stays off (and imports nothing) until OTEL_TRACES_EXPORTER or
# an OTLP endpoint is set on a container.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[otel]"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SIGNQ_LOG_FORMAT=json
RUN useradd --create-home --uid 10001 signq
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER signq
WORKDIR /home/signq
ENTRYPOINT ["signq"]
CMD ["--help"]

# The worker image: non-root, configuration from /etc/vigo/vigo.yaml or VIGO_* variables.
# No container engine in CI: tests/test_deploy_files.py replays this file (its COPY lines,
# the pip steps, ENTRYPOINT, CMD and ENV) in a virtualenv, and runs hadolint and checkov.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY topics topics
COPY projections projections
COPY alerts alerts
COPY processor processor
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[rocksdb]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/vigo --create-home vigo
COPY --from=build /wheels /wheels
# --no-index: the image gets exactly what the build stage built, nothing fetched later.
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /var/lib/vigo
ENV VIGO_CONFIG=/etc/vigo/vigo.yaml \
    VIGO_PROCESSOR__DATA_DIR=/var/lib/vigo/data \
    VIGO_PROCESSOR__STORE=rocksdb
EXPOSE 6066
HEALTHCHECK --interval=30s --timeout=3s CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:6066/healthz', timeout=2)"]
ENTRYPOINT ["vigo-processor"]
CMD ["worker", "-l", "info"]

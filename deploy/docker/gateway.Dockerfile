# syntax=docker/dockerfile:1
# The gateway image: only shared, services/gateway and the third-party packages they need, pinned
# with hashes (deploy/docker/requirements/gateway.txt, cut from requirements.lock by
# deploy/docker/lock_slice.py). Build from the repository root:
#     docker build -f deploy/docker/gateway.Dockerfile -t model-router-fleet/gateway .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# build tools for our own packages, hash-checked from the lock, in a venv of their own
COPY deploy/docker/requirements/build.txt /tmp/build.txt
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps -r /tmp/build.txt
# the service's runtime: its slice of the lock (hashes required), then our packages as wheels
COPY deploy/docker/requirements/gateway.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/requirements.txt
COPY shared/ /src/shared/
COPY services/gateway/ /src/services/gateway/
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation -w /tmp/wheels /src/shared /src/services/gateway \
 && /opt/venv/bin/pip install --no-deps /tmp/wheels/*.whl \
 && /opt/venv/bin/pip check

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --no-create-home fleet
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001

# the OpenAI / Anthropic APIs (GATEWAY_HOST beyond loopback needs GATEWAY_KEYS or GATEWAY_KEYS_FILE)
ENV GATEWAY_HOST=0.0.0.0 GATEWAY_PORT=4000
EXPOSE 4000
# liveness / readiness of the fleet process (see fleet_shared.ops_http); no curl in the image
ENV FLEET_METRICS_PORT=9464
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-m", "fleet_shared.ops_http", "/readyz"]
# SIGTERM: stop accepting, let requests in flight finish, drain NATS (see fleet_gateway.app)
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "fleet_gateway"]

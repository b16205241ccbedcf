# syntax=docker/dockerfile:1
# The emulators image: only services/emulators and the third-party packages they need, pinned
# with hashes (deploy/docker/requirements/emulators.txt, cut from requirements.lock by
# deploy/docker/lock_slice.py). Build from the repository root:
#     docker build -f deploy/docker/emulators.Dockerfile -t model-router-fleet/emulators .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# build tools for our own packages, hash-checked from the lock, in a venv of their own
COPY deploy/docker/requirements/build.txt /tmp/build.txt
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps -r /tmp/build.txt
# the service's runtime: its slice of the lock (hashes required), then our packages as wheels
COPY deploy/docker/requirements/emulators.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/requirements.txt
COPY services/emulators/ /src/services/emulators/
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation -w /tmp/wheels /src/services/emulators \
 && /opt/venv/bin/pip install --no-deps /tmp/wheels/*.whl \
 && /opt/venv/bin/pip check

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --no-create-home fleet
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001

EXPOSE 8080
# SIGTERM: stop fetching, finish in-flight work, drain (see fleet_shared.runner)
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "fleet_emulators"]
CMD ["--provider", "openai", "--port", "8080", "--host", "0.0.0.0"]

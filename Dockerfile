# syntax=docker/dockerfile:1
# One image for the API, the worker and Flower: `leadarchive api|worker|flower` picks the process
# (docker-compose.yml). The project is installed with pip from this source tree into a virtualenv
# at /opt/leadarchive/.venv, the same path as on a Vicidial server (deploy/README.md).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/leadarchive/.venv
WORKDIR /src
# Only what the wheel is built from (pyproject.toml lists these packages); tests, benchmarks and
# deploy files stay out of the image.
COPY pyproject.toml README.md ./
COPY api ./api
COPY tasks ./tasks
COPY worker ./worker
COPY leadarchive ./leadarchive
RUN /opt/leadarchive/.venv/bin/pip install . \
    && /opt/leadarchive/.venv/bin/leadarchive --help >/dev/null

FROM ${PYTHON_IMAGE}
# A fixed, unprivileged user; the code and the virtualenv belong to root and are read-only to it.
RUN groupadd --system --gid 10001 leadarchive \
    && useradd --system --uid 10001 --gid leadarchive --create-home \
        --home-dir /home/leadarchive --shell /usr/sbin/nologin leadarchive
COPY --from=build /opt/leadarchive/.venv /opt/leadarchive/.venv
ENV PATH=/opt/leadarchive/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER leadarchive
WORKDIR /home/leadarchive
EXPOSE 8000 5555
CMD ["leadarchive", "api", "--host", "0.0.0.0", "--port", "8000"]

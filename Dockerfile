# The oximon image: one image, one entry point; the compose file picks the service by its
# subcommand (`oximon ingest`, `oximon api`, …).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Pinned dependencies first, in their own layer: a code change does not reinstall them.
# requirements-prod.lock is the runtime part of requirements.lock (same pins, no test or lint
# tools): `uv pip compile pyproject.toml -c requirements.lock -o requirements-prod.lock
# --python-version 3.11` after every change of requirements.lock.
COPY requirements-prod.lock ./
RUN pip install -r requirements-prod.lock

# Only the packages (no .env, no .local, no .venv in the image); then oximon itself, without
# resolving anything again.
COPY pyproject.toml ./
COPY core ./core
COPY devices ./devices
COPY ingest ./ingest
COPY alerting ./alerting
COPY api ./api
COPY dashboards ./dashboards
COPY simulator ./simulator
COPY oximon ./oximon
RUN pip install --no-deps . && rm -rf build ./*.egg-info

# Services never run as root.
RUN groupadd --system --gid 10001 oximon \
    && useradd --system --uid 10001 --gid oximon --no-create-home --shell /usr/sbin/nologin oximon
WORKDIR /app
USER 10001:10001

EXPOSE 8000
ENTRYPOINT ["oximon"]
CMD ["--help"]

# The oxyfleet image: the ingester, the health engine, the simulator, the dashboards push and the CLI.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Dependencies first, exactly as locked (versions and hashes; scripts/lock regenerates the file), in
# their own layer so that a code change does not reinstall them.
COPY docker/requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes --no-deps -r /tmp/requirements.lock && rm /tmp/requirements.lock
# Then oxyfleet itself, without resolving anything again (--no-deps, the locked setuptools builds it).
# The whole source tree is copied so every package (and its package data: the device catalog, the sample
# inventory, the dashboards' JSON) is included whatever the layout; .dockerignore keeps out tests,
# secrets and local state.
COPY . /src
RUN pip install --no-deps --no-build-isolation /src && rm -rf /src \
    && groupadd --system --gid 10001 oxyfleet && useradd --system --uid 10001 --gid 10001 oxyfleet \
    && mkdir -p /var/lib/oxyfleet/spool && chown -R oxyfleet:oxyfleet /var/lib/oxyfleet
# The spool must outlive the container (it holds acked data while InfluxDB is away): compose mounts a
# volume here; the directory exists and belongs to the service user so a fresh named volume inherits that.
ENV OXYFLEET_SPOOL__DIR=/var/lib/oxyfleet/spool OXYFLEET_HEALTH__API_TOKENS_FILE=/var/lib/oxyfleet/api-tokens.json
WORKDIR /var/lib/oxyfleet
USER 10001:10001
ENTRYPOINT ["oxyfleet"]
CMD ["run"]

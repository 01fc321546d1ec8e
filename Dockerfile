# oxyfleet as a small image: the ingester, the health engine, the dashboards push and every other command.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
# Every package the wheel ships (pyproject's packages.find), so `oxyfleet dashboards push` finds its JSON
# here as in the wheel; tests/unit/test_packaging.py fails when a package is missing from this list.
COPY oxyfleet ./oxyfleet
COPY core ./core
COPY store ./store
COPY ingest ./ingest
COPY health ./health
COPY report ./report
COPY dashboards ./dashboards
COPY fleetsim ./fleetsim
COPY devices ./devices
# The spool must outlive the container (it holds acked data while InfluxDB is away): compose mounts a
# volume here; the directory exists and belongs to the service user so a fresh named volume inherits that.
RUN pip install . && useradd --system --uid 10001 oxyfleet \
    && mkdir -p /var/lib/oxyfleet/spool && chown -R oxyfleet /var/lib/oxyfleet
ENV OXYFLEET_SPOOL__DIR=/var/lib/oxyfleet/spool OXYFLEET_HEALTH__API_TOKENS_FILE=/var/lib/oxyfleet/api-tokens.json
USER oxyfleet
ENTRYPOINT ["oxyfleet"]
CMD ["run"]

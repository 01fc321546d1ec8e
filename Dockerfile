# The oxyfleet ingester (and, later, the health engine) as a small image.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ingest ./ingest
COPY devices ./devices
# The spool must outlive the container (it holds acked data while InfluxDB is away): compose mounts a
# volume here; the directory exists and belongs to the service user so a fresh named volume inherits that.
RUN pip install . && useradd --system --uid 10001 oxyfleet \
    && mkdir -p /var/lib/oxyfleet/spool && chown -R oxyfleet /var/lib/oxyfleet
ENV OXYFLEET_SPOOL__DIR=/var/lib/oxyfleet/spool
USER oxyfleet
ENTRYPOINT ["oxyfleet"]
CMD ["run"]

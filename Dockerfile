# The oxyfleet ingester (and, later, the health engine) as a small image.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ingest ./ingest
COPY devices ./devices
RUN pip install . && useradd --system --uid 10001 oxyfleet
USER oxyfleet
ENTRYPOINT ["oxyfleet"]
CMD ["run"]

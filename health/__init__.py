"""The health process: rules, engine, uptime, alerts and the read-only HTTP API.

It reads only what is stored (through :mod:`store`), so it sees every unit whichever ingester wrote it,
survives restarts and re-evaluates late data; it never imports :mod:`ingest` and the ingester never
imports it: the two meet only in InfluxDB.
"""

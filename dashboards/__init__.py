"""Grafana: the dashboards and alert rules as typed data, their generated JSON/YAML, and the push to a server."""

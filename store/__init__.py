"""oxyfleet's InfluxDB: the stored names, line protocol, the writer (v1/v2) and the InfluxQL reader.

Every measurement, tag and field name oxyfleet stores is spelt in :mod:`store.schema` and nowhere else
(a test greps the tree for it), so the ingester, the health engine, the dashboards and the CLI cannot
drift apart on a name.
"""

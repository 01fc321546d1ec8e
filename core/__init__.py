"""Plumbing every oxyfleet process shares: settings, the error tree, logging and the MQTT client factory.

It sits between the storage layer and the device contract: ``store``, ``ingest``, ``health``,
``dashboards`` and ``fleetsim`` all read their settings and raise errors from here, so the exit-code
mapping in the shell sees one exception tree (as httpx keeps one in ``_exceptions.py``). It imports
nothing of oxyfleet's but ``devices``.
"""

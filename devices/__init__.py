"""Device side of oxyfleet: kinds, the payload contract and the fleet simulator.

This package imports only pydantic (and paho in the simulator); it never imports ``ingest``, so firmware
makers and tools can use the payload contract without the ingester.
"""

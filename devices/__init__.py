"""The device contract: kinds and topics, the payload models, the model catalog and the fleet inventory.

This package imports only pydantic (and the standard library); it never imports the rest of oxyfleet, so
firmware makers and tools can use the payload contract alone. The simulator lives in :mod:`fleetsim`.
"""

"""A simulated fleet: realistic readings, scheduled faults with ground truth, and a load generator.

It imports the device contract (:mod:`devices`) to publish exactly what firmware would; the contract never
imports it back, so firmware makers and the ingester do not carry simulation code.
"""

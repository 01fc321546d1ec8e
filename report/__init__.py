"""Monthly reports for hospitals, provinces and donors: availability, oxygen delivered, faults, plots.

A process of its own beside the health engine: it reads what the engine stored (``unit_state``,
``unit_event``) and the telemetry, and renders HTML, PDF and CSV for people who will never open Grafana.
"""

"""Allow ``python -m oxyfleet``."""

from oxyfleet.cli import main

main()

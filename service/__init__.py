"""dlr-tracker: delivery-report tracking for SMS platforms."""

__version__ = "0.1.0"

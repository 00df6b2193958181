"""tokenvoy: an AI gateway data plane that runs behind Envoy."""

__version__ = "0.1.0"

"""The platform's shared library: settings, the Kafka bus, telemetry, service scaffolding, clients, the CLI.

Every service imports from here; nothing here imports from ``services``.
"""

__version__ = "0.1.0"

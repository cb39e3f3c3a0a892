"""CLI commands; each module defines ``register(app)`` and is listed in ``milkit.cli``."""

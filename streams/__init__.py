"""Kafka side of interest-stream: event schema, stream and embed workers, publisher, CLI."""

from __future__ import annotations

__version__ = "0.1.0"

"""ML side of interest-stream: encoder, pure interest math, Qdrant store. Never imports Kafka."""

from __future__ import annotations

"""The shared test fixtures (tests/conftest.py) do what tests rely on."""

from __future__ import annotations

from streams.settings import TopicSettings


def test_topics_fixture_gives_every_topic_a_fresh_name(topics: TopicSettings) -> None:
    # Every topic a worker reads or writes, so tests never see each other's records.
    fields = [name for name, info in TopicSettings.model_fields.items() if info.annotation is str]
    assert {"events", "dlq", "updates", "popularity"} <= set(fields)
    defaults = TopicSettings()
    names = {getattr(topics, name) for name in fields}
    assert len(names) == len(fields)
    assert all(getattr(topics, name) != getattr(defaults, name) for name in fields)

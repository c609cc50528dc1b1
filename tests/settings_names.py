"""The ``INTEREST_*`` variables the project reads, from its settings classes, so deploy files
(compose, the Helm chart) that set a misspelt or removed one fail a test instead of being ignored
in silence (pydantic-settings ignores unknown variables)."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path

from models.config import InterestSettings

ROOT = Path(__file__).resolve().parents[1]

#: Read by the CLI itself, not by a settings class.
CLI_VARIABLES = {"INTEREST_LOG_LEVEL", "INTEREST_CONFIG_FILE"}


def _subclasses(cls: type) -> Iterable[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def setting_names() -> set[str]:
    """Every ``INTEREST_*`` variable a settings class of streams/ or models/ reads."""
    for path in sorted([*ROOT.glob("streams/**/*.py"), *ROOT.glob("models/**/*.py")]):
        text = path.read_text()
        if "InterestSettings)" in text or "Generational)" in text:
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            importlib.import_module(module)
    names = set()
    for cls in _subclasses(InterestSettings):
        prefix = str(cls.model_config.get("env_prefix") or "INTEREST_")
        for field, info in cls.model_fields.items():  # read under its alias only, if it has one
            alias = info.validation_alias
            names.add(alias.upper() if isinstance(alias, str) else (prefix + field).upper())
    return names


def unknown_settings(variables: Iterable[str]) -> list[str]:
    """The ``INTEREST_*`` names among ``variables`` that nothing reads, sorted."""
    known = setting_names() | CLI_VARIABLES
    return sorted(v for v in set(variables) if v.startswith("INTEREST_") and v not in known)

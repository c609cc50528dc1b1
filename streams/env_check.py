"""Unknown ``INTEREST_*`` environment variables: a misspelt setting is reported, not ignored.

pydantic-settings ignores variables no field reads, so ``INTEREST_BROKR_PORT=19092`` would leave
the broker on its default port without a word. The CLI calls :func:`unknown_variables` once at
start and warns about each name no settings class reads, with the closest real name.

The known names come from the settings classes themselves (prefix + field name). The light ones
(core, Kafka side) are checked first; the ML side's classes are imported only when a name is left
over, so a command with only Kafka settings in its environment starts as fast as before.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Mapping

from models.config import CONFIG_FILE_ENV, InterestSettings

PREFIX = "INTEREST_"
#: Read by the CLI itself rather than by a settings class.
CLI_VARIABLES = frozenset({"INTEREST_LOG_LEVEL", CONFIG_FILE_ENV})
#: Read by the project's scripts, tests and benchmarks, not by the service.
TOOL_VARIABLES = frozenset(
    {
        "INTEREST_VENV",
        "INTEREST_DEPLOY_TOOLS",
        "INTEREST_TOOLS_DIR",
        "INTEREST_EVAL_CACHE",
        "INTEREST_IMAGE_TAG",
    }
)
TOOL_PREFIXES = ("INTEREST_TEST_",)
#: Set by the deploy files for a setting this version does not read yet (the write API's token).
RESERVED = frozenset({"INTEREST_API_TOKEN"})
#: Modules whose settings classes are imported only when a name is not found in the light ones.
HEAVY_SETTINGS_MODULES = ("models.settings", "streams.stream.settings")


def _subclasses(cls: type[InterestSettings]) -> Iterable[type[InterestSettings]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def setting_names() -> set[str]:
    """Every ``INTEREST_*`` variable read by a settings class imported so far."""
    names: set[str] = set()
    for cls in _subclasses(InterestSettings):
        prefix = str(cls.model_config.get("env_prefix") or PREFIX)
        fields = getattr(cls, "model_fields", {})
        for field, info in fields.items():  # a field read under an alias has only that name
            alias = info.validation_alias
            names.add(alias.upper() if isinstance(alias, str) else (prefix + field).upper())
    return names


def _allowed(name: str) -> bool:
    return (
        name in CLI_VARIABLES
        or name in TOOL_VARIABLES
        or name in RESERVED
        or name.startswith(TOOL_PREFIXES)
    )


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``(name, closest known name or None)`` for each ``INTEREST_*`` variable no setting reads.

    Names compare case-insensitively, as pydantic-settings reads them.
    """
    import streams.settings  # noqa: F401  (registers the Kafka side's classes)

    candidates = sorted(
        {n for n in environ if n.upper().startswith(PREFIX) and not _allowed(n.upper())}
    )
    known = setting_names()
    left = [n for n in candidates if n.upper() not in known]
    if left:
        for module in HEAVY_SETTINGS_MODULES:
            try:
                importlib.import_module(module)
            except ImportError:  # a partial install: the names it would add stay unknown
                continue
        known = setting_names()
        left = [n for n in left if n.upper() not in known]
    everything = sorted(known | CLI_VARIABLES)
    return [(n, _closest(n.upper(), everything)) for n in left]


def _closest(name: str, known: list[str]) -> str | None:
    found = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return found[0] if found else None


def warnings_for(environ: Mapping[str, str]) -> list[str]:
    """One line per unknown variable, as the CLI prints them."""
    lines = []
    for name, closest in unknown_variables(environ):
        hint = f"; did you mean {closest}?" if closest else ""
        lines.append(f"warning: {name} is not a setting of interest-stream and is ignored{hint}")
    return lines

"""The images (deploy/docker), checked without a container runtime: hadolint's best practices, and
what this project promises about them, read from the Dockerfiles themselves -- multi-stage, bases
pinned by tag, a non-root user, the bundled model baked in with the hub off, one entry point and a
/healthz HEALTHCHECK per role -- plus the .dockerignore and the healthcheck script at work."""

from __future__ import annotations

import http.server
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from deploy_tools import DEPLOY, ROOT, require_tool

DOCKER = DEPLOY / "docker"
#: Each Dockerfile's role targets -> the CLI subcommand the target runs and its /healthz port.
ROLES = {
    "Dockerfile": {"stream": ("stream", 8766), "embed": ("embed", 8765), "run": ("run", 8765)},
    "Dockerfile.gpu": {"embed": ("embed", 8765)},
}


@dataclass
class Stage:
    name: str
    base: str  # the image or the stage it starts from, ARGs resolved
    instructions: list[tuple[str, str]] = field(default_factory=list)


def instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        word, _, rest = logical.partition(" ")
        yield word.upper(), rest.strip()
        logical = ""


def stages(text: str) -> list[Stage]:
    """The build stages in order; ``ARG``s before the first FROM are substituted into FROMs."""
    args: dict[str, str] = {}
    found: list[Stage] = []
    for word, rest in instructions(text):
        if word == "ARG" and not found:
            name, _, default = rest.partition("=")
            args[name] = default
        elif word == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), rest)
            parts = re.split(r"\s+as\s+", image, flags=re.I)
            alias = parts[1].strip() if len(parts) > 1 else str(len(found))
            found.append(Stage(alias, parts[0].strip()))
        elif found:
            found[-1].instructions.append((word, rest))
    return found


def lineage(all_stages: list[Stage], stage: Stage) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    by_name = {s.name: s for s in all_stages}
    chain = [stage]
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    return chain


def last(chain: list[Stage], word: str) -> str | None:
    """The effective value of a single-valued instruction (USER, CMD, ...) for a stage."""
    for stage in chain:
        for found, rest in reversed(stage.instructions):
            if found == word:
                return rest
    return None


def env_of(chain: list[Stage]) -> dict[str, str]:
    env: dict[str, str] = {}
    for stage in reversed(chain):
        for word, rest in stage.instructions:
            if word == "ENV":
                env.update(dict(p.split("=", 1) for p in shlex.split(rest) if "=" in p))
    return env


def problems(text: str, roles: dict[str, tuple[str, int]]) -> list[str]:
    """Everything the Dockerfile does against the project's image rules (empty: none)."""
    found = stages(text)
    names = {s.name for s in found}
    out = [] if len(found) >= 2 else ["not multi-stage: one FROM"]
    for s in found:
        if s.base in names:
            continue
        tag = s.base.rpartition(":")[2] if ":" in s.base.split("/")[-1] else ""
        if not tag or "$" in tag:
            out.append(f"stage {s.name}: base {s.base} is not pinned by a tag")
        elif tag == "latest" or tag.startswith("latest"):
            out.append(f"stage {s.name}: base {s.base} uses the moving tag latest")
    baked = [r for s in found for w, r in s.instructions if w == "RUN" and "Encoder(" in r]
    if not baked or any("HF_HUB_OFFLINE=1" not in r for r in baked):
        out.append("the bundled model is not loaded offline (HF_HUB_OFFLINE=1) during the build")
    for role, (command, port) in roles.items():
        out += _role_problems(found, role, command, port)
    return out


def _role_problems(found: list[Stage], role: str, command: str, port: int) -> list[str]:
    stage = next((s for s in found if s.name == role), None)
    if stage is None:
        return [f"no target {role}"]
    chain = lineage(found, stage)
    out = []
    user = (last(chain, "USER") or "root").split(":")[0]
    if user in {"root", "0"}:
        out.append(f"{role}: runs as root")
    if last(chain, "ENTRYPOINT") != '["interest-stream"]':
        out.append(f"{role}: the entry point is not the interest-stream CLI")
    if last(chain, "CMD") != f'["{command}"]':
        out.append(f"{role}: CMD is {last(chain, 'CMD')}, not [{command!r}]")
    health = last(chain, "HEALTHCHECK") or ""
    if "healthcheck.py" not in health or not health.rstrip('"]').endswith(role):
        out.append(f"{role}: no HEALTHCHECK of its /healthz")
    exposed = " ".join(r for s in chain for w, r in s.instructions if w == "EXPOSE").split()
    if str(port) not in exposed:
        out.append(f"{role}: does not EXPOSE {port}")
    env = env_of(chain)
    if env.get("HF_HUB_OFFLINE") != "1":
        out.append(f"{role}: HF_HUB_OFFLINE=1 is not set at run time")
    return out


@pytest.mark.parametrize("name", sorted(ROLES))
def test_images_keep_the_projects_rules(name: str) -> None:
    assert problems((DOCKER / name).read_text(), ROLES[name]) == []


def test_the_checker_names_what_a_careless_dockerfile_gets_wrong() -> None:
    careless = """
        FROM python:latest
        RUN pip install interest-stream
        ENTRYPOINT ["python"]
        CMD ["-m", "streams.cli", "stream"]
    """
    found = problems(careless, {"stream": ("stream", 8766)})
    assert "not multi-stage: one FROM" in found
    assert "stage 0: base python:latest uses the moving tag latest" in found
    assert any("bundled model" in p for p in found)
    assert "no target stream" in found
    unpinned = "FROM debian AS build\nRUN true\nFROM build AS stream\nUSER root\n"
    found = problems(unpinned, {"stream": ("stream", 8766)})
    assert "stage build: base debian is not pinned by a tag" in found
    assert "stream: runs as root" in found
    assert "stream: no HEALTHCHECK of its /healthz" in found


def test_role_targets_run_real_subcommands() -> None:
    from streams.cli import main

    commands = {command for roles in ROLES.values() for command, _ in roles.values()}
    assert commands <= set(main.commands)


@pytest.mark.parametrize("name", sorted(ROLES))
def test_hadolint_passes(name: str) -> None:
    hadolint = require_tool("hadolint")
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKER / name)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: ``**`` any folders, ``*`` and ``?`` within one."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or a folder above it decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.match(c) for c in candidates):
            verdict = not negated
    return verdict


def test_dockerignore_keeps_what_the_images_copy_and_drops_the_rest() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = {
        src
        for name in ROLES
        for s in stages((DOCKER / name).read_text())
        for word, rest in s.instructions
        if word == "COPY" and "--from" not in rest
        for src in shlex.split(rest)[:-1]
    }
    files = [p for src in copied for p in (ROOT / src).rglob("*") if p.is_file()]
    files += [ROOT / src for src in copied if (ROOT / src).is_file()]
    kept = [
        str(p.relative_to(ROOT))
        for p in files
        if "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]
    assert {"pyproject.toml", "streams/cli.py", "models/encoder.py"} <= set(kept)
    assert [p for p in kept if ignored(p, patterns)] == []
    for outside in (
        "tests/conftest.py",
        "bench/README.md",
        ".git/HEAD",
        "streams/__pycache__/x.pyc",
    ):
        assert ignored(outside, patterns), outside


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def _serve(status: int) -> tuple[http.server.HTTPServer, int]:
    handler = type("Handler", (_Health,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def _healthcheck(role: str, env: dict[str, str]) -> int:
    return subprocess.run(
        [sys.executable, str(DOCKER / "healthcheck.py"), role],
        env=env, capture_output=True, timeout=30, check=False,
    ).returncode  # fmt: skip


def test_healthcheck_follows_the_workers_healthz() -> None:
    ok, ok_port = _serve(200)
    busy, busy_port = _serve(503)
    try:
        assert _healthcheck("embed", {"INTEREST_API_PORT": str(ok_port)}) == 0
        assert _healthcheck("stream", {"INTEREST_STREAM_METRICS_PORT": str(busy_port)}) == 1
        both = {"INTEREST_API_PORT": str(ok_port), "INTEREST_STREAM_METRICS_PORT": str(busy_port)}
        assert _healthcheck("run", both) == 1
        both["INTEREST_STREAM_METRICS_PORT"] = str(ok_port)
        assert _healthcheck("run", both) == 0
        assert _healthcheck("nonsense", {}) == 2
    finally:
        ok.shutdown()
        busy.shutdown()
    # Nobody listening any more: unhealthy, not a hang or a crash.
    assert _healthcheck("embed", {"INTEREST_API_PORT": str(ok_port)}) == 1

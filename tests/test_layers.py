"""The package's layers run one way: an ast pass over worker/ keeps them so (imports inside
functions counted)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "worker"


def imports() -> dict[str, set[str]]:
    """Every module of worker/ and the worker modules it imports, anywhere in its body."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            found: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                found = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            graph[name] |= {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    """No module of worker/ reaches itself through its imports."""
    assert cycles(imports()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check itself can fail."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        # The third-party boundary stands alone, so it can be swapped or faked.
        ("worker.jsms", ("worker.jsms",)),
        # The emulator speaks the API's language and nothing of signq's core.
        ("worker.emulator", ("worker.emulator", "worker.jsms", "worker.files", "worker.net")),
        # Leaves every layer may use; the error tree is the lowest of them.
        ("worker.errors", ()),
        ("worker.net", ()),
        ("worker.files", ("worker.errors",)),
        ("worker.keys", ()),
        ("worker.settings", ("worker.errors",)),
        ("worker.tracing", ()),
        ("worker.logs", ("worker.jsms.credentials", "worker.tracing")),
        ("worker.connections", ("worker.settings",)),
        ("worker.store", ("worker.keys", "worker.settings", "worker.errors", "worker.connections")),
        ("worker.embedded_redis", ("worker.net", "worker.settings", "worker.errors")),
    ],
)
def test_a_layer_imports_only_what_is_below_it(module: str, allowed: tuple[str, ...]) -> None:
    """Each layer's imports stay inside what the data flow allows."""
    graph = imports()
    for name, targets in graph.items():
        if name != module and not name.startswith(module + "."):
            continue
        wrong = {
            t
            for t in targets
            if not any(t == a or t.startswith(a + ".") for a in (module, *allowed))
            and t != "worker"
        }
        assert not wrong, f"{name} imports {sorted(wrong)}"


def test_the_core_never_imports_the_command_line() -> None:
    """Wording for people lives in the CLI: no core module imports it (the shipped test
    harness sits on top, beside it, and drives it)."""
    people = {"worker.cli", "worker.demo", "worker.__main__"}
    for name, targets in imports().items():
        if name in people or name.startswith("worker.cli.") or name == "worker.testing":
            continue
        wrong = {t for t in targets if t in people or t.startswith("worker.cli.")}
        assert not wrong, f"{name} imports {sorted(wrong)}"


def test_importing_the_package_has_no_side_effects() -> None:
    """Importing every module of the package (the actors included) sets no global broker,
    configures no logging and reads no environment: a fresh interpreter with a broken
    environment imports them all and finds Dramatiq's global broker and the root logger as
    they were."""
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    modules = sorted(
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for path in PACKAGE.rglob("*.py")
        if path.name != "__main__.py"
    )
    probe = (
        "import importlib, logging, dramatiq.broker\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "assert dramatiq.broker.global_broker is None, 'a global broker was set'\n"
        "assert not logging.getLogger().handlers, 'logging was configured'\n"
        "print('clean', len(" + repr(modules) + "))\n"
    )
    env = {**os.environ, "SIGNQ_REDIS_URL": "not a url", "SIGNQ_LOG_LEVEL": "nonsense"}
    done = subprocess.run(
        [sys.executable, "-c", probe],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("clean ")

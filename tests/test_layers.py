"""Every import points one way (docs/architecture.md, "Layers"): the ground floor of `bridge/` (events, the config,
storage, the audio stages) at the bottom, then `asr/`, `dispatch/`, `hardware/` in that order, and the wiring at the
top (the service and each role, the web app, the command line), which alone may reach every package. A stage needs
something of a package above it? The wiring hands it over (the spotter's keyword list, the dispatcher's bus).

Read from the source with `ast` (every import: at the top, inside functions, under TYPE_CHECKING)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("asr", "dispatch", "hardware")  # each may import those before it, never one after it
# bridge's wiring: what builds and connects the stages, per role; the rest of bridge/ is the ground floor
WIRING = ("bridge.cli", "bridge.commands", "bridge.service", "bridge.channel", "bridge.web", "bridge.nodes",
          "bridge.forward", "bridge.central", "bridge.central_archive", "bridge.central_dispatch", "bridge.central_health",
          "bridge.region_jurisdiction", "bridge.recognition_node")  # fmt: skip
CONFIG = ("asr.config", "dispatch.config", "hardware.config")  # sections of the one config: the vocabulary's


def modules() -> dict[str, Path]:
    found = {}
    for package in ("bridge", *STAGES):
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def layer(module: str) -> str:
    """ground, asr, dispatch, hardware or wiring."""
    package = module.split(".")[0]
    if package != "bridge":
        return package
    return "wiring" if any(module == w or module.startswith(f"{w}.") for w in WIRING) else "ground"


def allowed(importer: str, imported: str) -> bool:
    if imported in CONFIG or imported.startswith(tuple(f"{c}." for c in CONFIG)):
        return True
    order = ["ground", *STAGES, "wiring"]
    mine, theirs = layer(importer), layer(imported)
    return mine == "wiring" or order.index(theirs) <= order.index(mine)


def test_every_import_points_down_the_layers() -> None:
    known = modules()
    wrong = sorted(f"{importer} imports {imported}" for importer, path in known.items() for imported in imports(path)
                   if imported in known and not allowed(importer, imported))  # fmt: skip
    assert not wrong, "\n".join(wrong)


def test_the_rule_catches_an_upward_import() -> None:
    assert not allowed("asr.keywords", "dispatch.phonetic") and not allowed("bridge.segmenter", "asr.live")
    assert not allowed("dispatch.sos", "hardware.lines.base") and not allowed("dispatch.dispatcher", "bridge.web.app")
    assert allowed("hardware.radios", "dispatch.announce") and allowed("bridge.config", "asr.config")
    assert allowed("bridge.service", "hardware.radios") and allowed("dispatch.dispatcher", "bridge.config")

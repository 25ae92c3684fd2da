"""The parts of classifier/ and which may import which (README "Development").

The import graph is read with `ast` from the source files, every `import`
counted, those inside functions and `if TYPE_CHECKING:` too: a lazy import is
still a dependency.  The rule: a part imports only the parts before it in
LAYERS; and envelope never imports lookup (headers are read without DNS).
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "classifier"

# Bottom first.  "foundation" and "steps" are modules at the top of classifier/.
LAYERS = (
    "foundation",  # message, config, policies, trusted, names, vocab, files, log, display,
    # errors, lazyre, logwords
    "lookup",  # DNS: resolver, sources, wire
    "envelope",  # step 1: received, hop, clauses, quick, formats, marks, trust
    "auth",  # step 2: spf, dkim, arc, header_block, dmarc(_discovery), fromheader, checks, facts
    "policy",  # step 3: verdict
    "steps",  # steps 1-4 together: evaluate, annotate
    "aggregate",  # DMARC aggregate reports: rows, store, feedback (RFC 9990)
    "delivery",  # pipe, targets, daemon, daemon_client, handover
    "report",  # build, cache, render
    "mailstore",  # maildir, folders, keywords, mailfiles, filing, watch (workers, sd_notify),
    # quarantine, recheck, configedit
    "learning",  # what users' moves teach (issue 17): moves, store, proposals
    "commands",  # argument parsing and exit codes: the top of the house
)
FOUNDATION = frozenset(
    {"message", "config", "policies", "trusted", "names", "vocab", "files", "log", "display"}
    | {"errors", "lazyre", "sections", "logwords"}
)
STEPS = frozenset({"evaluate", "annotate"})
FORBIDDEN = frozenset({("envelope", "lookup")})  # besides the order
CORE = frozenset({"foundation", "lookup", "envelope", "auth", "policy", "steps"})


def part_of(module: str) -> str | None:
    """Gives the part a classifier module belongs to, or None for a module outside classifier."""
    names = module.split(".")
    if names[0] != "classifier":
        return None
    if len(names) == 1 or names[1] == "__init__":
        return "foundation"  # the package itself: __version__
    if names[1] in FOUNDATION:
        return "foundation"
    if names[1] in STEPS:
        return "steps"
    return names[1]


def may_import(importer: str, imported: str) -> bool:
    """Gives whether a module of part `importer` may import one of part `imported`."""
    if importer == imported:
        return True
    if (importer, imported) in FORBIDDEN:
        return False
    return LAYERS.index(imported) < LAYERS.index(importer)


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Gives every module name the file imports (absolute; relative ones resolved)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from classifier import x` imports the module classifier.x when there is one.
            for alias in node.names:
                candidate = root.joinpath(*f"{base}.{alias.name}".split("."))
                if candidate.with_suffix(".py").is_file() or candidate.is_dir():
                    found.add(f"{base}.{alias.name}")
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Gives each module of root/classifier and the classifier modules it imports."""
    return {
        module_name(path, root): {m for m in imports_of(path, root) if part_of(m) is not None}
        for path in sorted((root / "classifier").rglob("*.py"))
    }


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Gives one line per import that breaks the rules, empty when there is none."""
    out = []
    for module, imported in sorted(graph.items()):
        src = part_of(module)
        assert src is not None
        for target in sorted(imported):
            dst = part_of(target)
            assert dst is not None
            if src not in LAYERS or dst not in LAYERS:
                stray = src if src not in LAYERS else dst
                out.append(f"{module} imports {target}: {stray} is no part")
            elif not may_import(src, dst):
                out.append(f"{module} imports {target}: {src} may not import {dst}")
    return out


def test_the_parts_follow_the_import_rules() -> None:
    assert violations(import_graph(ROOT)) == []


def test_every_module_belongs_to_a_part() -> None:
    for module in import_graph(ROOT):
        assert part_of(module) in LAYERS, f"{module}: add it to a part (tests/test_layers.py)"


def test_the_design_rules_follow_from_the_order() -> None:
    for core in CORE:
        for outer in ("delivery", "mailstore", "report", "learning", "commands"):
            assert not may_import(core, outer)
    assert not may_import("auth", "policy")
    assert not may_import("envelope", "lookup")
    for part in LAYERS[:-1]:
        assert not may_import(part, "commands")


def test_package_init_files_hold_a_docstring_only() -> None:
    # `authsieve pipe --daemon` imports classifier.delivery: its __init__ must cost nothing.
    for init in sorted(PACKAGE.rglob("__init__.py")):
        body = ast.parse(init.read_text()).body
        assert body and isinstance(body[0], ast.Expr), f"{init}: says what the part does"
        rest = body[1:]
        if init.parent == PACKAGE:
            rest = [n for n in rest if not (isinstance(n, ast.Assign))]  # __version__
        assert rest == [], f"{init}: a docstring only, no imports"


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for pkg in {p.parent for p in tmp_path.rglob("*.py")}:
        (pkg / "__init__.py").touch()
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # a check that reads the verdict
            {"classifier/auth/spf.py": "from classifier.policy.verdict import decide\n"},
            "classifier.auth.spf imports classifier.policy.verdict: auth may not import policy",
        ),
        (  # the envelope asking DNS, lazily inside a function
            {
                "classifier/envelope/trust.py": "def f():\n    from classifier.lookup import wire",
                "classifier/lookup/wire.py": "",
            },
            "classifier.envelope.trust imports classifier.lookup.wire: "
            "envelope may not import lookup",
        ),
        (  # a foundation module reaching for delivery
            {"classifier/config.py": "import classifier.delivery.targets\n"},
            "classifier.config imports classifier.delivery.targets: "
            "foundation may not import delivery",
        ),
        (  # today's recheck before issue 14: mailstore importing the command line
            {"classifier/mailstore/recheck.py": "from classifier.commands.report import warn\n"},
            "classifier.mailstore.recheck imports classifier.commands.report: "
            "mailstore may not import commands",
        ),
        (  # the report reading the mailstore, by a relative import
            {
                "classifier/report/cache.py": "from ..mailstore import quarantine\n",
                "classifier/mailstore/quarantine.py": "",
            },
            "classifier.report.cache imports classifier.mailstore.quarantine: "
            "report may not import mailstore",
        ),
        (  # a module at the top that belongs to no part
            {
                "classifier/helpers.py": "",
                "classifier/config.py": "from classifier import helpers\n",
            },
            "classifier.config imports classifier.helpers: helpers is no part",
        ),
    ],
)
def test_a_wrong_import_is_caught(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    root = _tree(tmp_path, files)
    assert expected in violations(import_graph(root))


def test_an_allowed_import_is_not_reported(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "classifier/auth/spf.py": "from classifier.envelope.trust import split_address\n",
            "classifier/envelope/trust.py": "from classifier import message\n",
            "classifier/message.py": "import email\n",
            "classifier/commands/main.py": "from classifier.mailstore import watch\n",
            "classifier/mailstore/watch.py": "",
        },
    )
    graph = import_graph(root)
    assert graph["classifier.envelope.trust"] == {"classifier", "classifier.message"}
    assert violations(graph) == []

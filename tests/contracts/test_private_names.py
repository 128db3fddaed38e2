"""No module of the node uses another module's private names (issue #19): a name that starts with ``_`` is
the module's own business, and a module whose name starts with ``_`` belongs to its package.

The import contracts (pyproject.toml, ``lint-imports``) check which module may import which; this checks
what is taken from it. Every module of the project is parsed (imports inside functions too):
``from x import _name``, ``import x._y`` and ``x._name`` where ``x`` is a project module all count. Names of
classes (``Model._meta``) and of other libraries (``sys._getframe``) do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ("exalate_node", "instances", "connections", "syncrules", "replicas")

# Where crossing the line is justified, by (importing module, imported name); keep it short.
ALLOWED: set[tuple[str, str]] = set()


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            found[module_name(path)] = path
    return found


def _inside(importer: str, package: str) -> bool:
    return importer == package or importer.startswith(package + ".")


def violations(importer: str, source: str, modules: set[str], *, is_package: bool = False) -> list[str]:
    """What ``importer`` (a dotted module name) takes from other modules' private names."""
    found: list[str] = []

    def check_module(target: str, line: int) -> None:
        # A private module (any ``_x`` part) may be imported from inside the package that holds it.
        parts = target.split(".")
        for i, part in enumerate(parts):
            if _private(part):
                package = ".".join(parts[:i])
                if not _inside(importer, package) and (importer, target) not in ALLOWED:
                    found.append(f"{importer}:{line} imports {target}, private to {package}")
                return

    def check_name(target: str, name: str, line: int) -> None:
        if f"{target}.{name}" in modules:
            check_module(f"{target}.{name}", line)
        elif _private(name) and target != importer and (importer, name) not in ALLOWED:
            found.append(f"{importer}:{line} uses {target}.{name}")

    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name -> project module
    package = importer if is_package else importer.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in APPS:
                    continue
                check_module(alias.name, node.lineno)
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] not in APPS:
                continue
            check_module(target, node.lineno)
            for alias in node.names:
                check_name(target, alias.name, node.lineno)
                if f"{target}.{alias.name}" in modules:
                    bound[alias.asname or alias.name] = f"{target}.{alias.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain: list[str] = []
        value: ast.expr = node
        while isinstance(value, ast.Attribute):
            chain.insert(0, value.attr)
            value = value.value
        if not isinstance(value, ast.Name) or value.id not in bound:
            continue
        target = bound[value.id]
        for attr in chain:
            if f"{target}.{attr}" in modules:
                target = f"{target}.{attr}"
                check_module(target, node.lineno)
            else:
                if attr == node.attr:  # only the outermost access names the attribute itself
                    check_name(target, attr, node.lineno)
                break
    return sorted(set(found))


def test_no_module_uses_another_modules_private_names() -> None:
    modules = project_modules()
    names = set(modules)
    found = [
        problem
        for name, path in sorted(modules.items())
        for problem in violations(name, path.read_text(), names, is_package=path.name == "__init__.py")
    ]
    assert found == [], "Make the name public (and document it) or move the code:\n" + "\n".join(found)


MODULES = {
    "replicas",
    "replicas.pipeline",
    "replicas.reconcile",
    "instances",
    "instances.connectors",
    "instances.connectors._common",
    "instances.connectors.jira",
}


@pytest.mark.parametrize(
    ("importer", "source"),
    [
        ("replicas.reconcile", "from replicas.pipeline import _strip\n"),
        ("replicas.reconcile", "def f():\n    from replicas.pipeline import comparable, _strip\n"),
        ("replicas.reconcile", "from .pipeline import _strip\n"),
        ("replicas.reconcile", "from replicas import pipeline\npipeline._META_CACHE.clear()\n"),
        ("replicas.reconcile", "import replicas.pipeline\nreplicas.pipeline._strip({})\n"),
        ("replicas.reconcile", "import replicas.pipeline as p\np._strip({})\n"),
        ("replicas.reconcile", "from instances.connectors import _common\n"),
        ("replicas.reconcile", "from instances.connectors._common import TTLCache\n"),
        ("replicas.reconcile", "import instances.connectors._common\n"),
    ],
)
def test_the_check_finds_each_form_of_taking_a_private_name(importer: str, source: str) -> None:
    assert violations(importer, source, MODULES)


@pytest.mark.parametrize(
    ("importer", "source"),
    [
        ("replicas.reconcile", "from replicas.pipeline import comparable\n"),
        ("replicas.pipeline", "def _strip(): ...\n_strip()\n"),
        ("instances.connectors.jira", "from instances.connectors import _common\n"),
        ("instances.connectors.jira", "from ._common import TTLCache\n"),
        ("replicas.reconcile", "from replicas.models import Twin\nTwin._meta.get_field('x')\n"),
        ("replicas.reconcile", "import sys\nsys._getframe(0)\n"),
        ("replicas.reconcile", "from replicas import pipeline\npipeline.comparable({})\n"),
    ],
)
def test_the_check_allows_public_names_own_names_and_package_private_modules(
    importer: str, source: str
) -> None:
    assert violations(importer, source, MODULES) == []

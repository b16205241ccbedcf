"""The layout's rules, read from the source with ``ast`` (nothing is imported but packages'
``__init__`` for ``find_spec``):

- every Python file's path contains its import path: ``<project>/<pkg>/a/b.py`` is ``pkg.a.b``;
- ``shared/`` (the runtime) imports no other package of this repository;
- no service imports another service;
- a package imports only what its own ``pyproject.toml`` declares (directly, or through a
  declared dependency), so each one installs and runs alone: one image per service;
- every project is installed by ``make venv`` and known to ruff and mypy.

Projects (folders holding a ``pyproject.toml``) and their packages are found by globbing,
so a new service under ``services/<name>/fleet_<name>/`` is covered without editing this file.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Where projects live: the runtime, one folder per service, the client, the dev cluster, the bench.
PROJECT_GLOBS = {"runtime": "shared", "service": "services/*", "client": "client",
                 "dev tooling": "deploy/local", "bench": "bench"}  # fmt: skip


@dataclass(frozen=True)
class Project:
    folder: Path  # e.g. services/router
    kind: str  # a key of PROJECT_GLOBS
    name: str  # the distribution, e.g. fleet-router
    packages: frozenset[str]  # top-level import names, e.g. {"fleet_router"}
    pyproject: dict

    @property
    def rel(self) -> str:
        return self.folder.relative_to(ROOT).as_posix()


@cache
def projects() -> tuple[Project, ...]:
    found = []
    for kind, pattern in PROJECT_GLOBS.items():
        for manifest in sorted(ROOT.glob(f"{pattern}/pyproject.toml")):
            data = tomllib.loads(manifest.read_text())
            tops = frozenset(p.parent.name for p in manifest.parent.glob("*/__init__.py"))
            found.append(Project(manifest.parent, kind, canonicalize_name(data["project"]["name"]), tops, data))
    return tuple(found)


def packages_of(*kinds: str) -> set[str]:
    return {pkg for p in projects() if p.kind in kinds for pkg in p.packages}


#: The folders whose every .py must sit in a package (a stray module fails the path test).
SCANNED = ("shared", "services", "client", "deploy/local", "bench")


def python_files() -> list[Path]:
    return sorted(f for base in SCANNED for f in (ROOT / base).rglob("*.py") if "__pycache__" not in f.parts)


def owner(path: Path) -> Project | None:
    return next((p for p in projects() if p.folder in path.parents), None)


def module_name(path: Path) -> str | None:
    """The import path the file's location promises, or None when it is in no package."""
    project = owner(path)
    if project is None:
        return None
    parts = list(path.relative_to(project.folder).with_suffix("").parts)
    if parts[0] not in project.packages:
        return None
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


# -- what a file imports ----------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    module: str
    line: int
    optional: bool  # inside `try: ... except ImportError`: the code runs without it


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def imports(source: str, module: str, is_package: bool = False) -> Iterator[Import]:
    """Every module ``source`` imports, anywhere in it (functions included), relative
    imports resolved against ``module``."""
    tree = ast.parse(source)
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            optional |= {id(sub) for stmt in node.body for sub in ast.walk(stmt)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            names = [base]
        else:
            continue
        yield from (Import(name, node.lineno, id(node) in optional) for name in names)


@cache
def imports_of(path: Path) -> tuple[Import, ...]:
    name = module_name(path) or path.stem
    return tuple(imports(path.read_text(), name, is_package=path.name == "__init__.py"))


def first_party_edges(kinds: tuple[str, ...]) -> Iterator[tuple[Path, Import, str, str]]:
    """(file, import, importer's top package, imported top package) across packages."""
    ours = packages_of(*PROJECT_GLOBS)
    for path in python_files():
        project = owner(path)
        if project is None or project.kind not in kinds:
            continue
        importer = path.relative_to(project.folder).parts[0]
        for imp in imports_of(path):
            top = imp.module.split(".")[0]
            if top in ours and top != importer:
                yield path, imp, importer, top


def _where(path: Path, imp: Import) -> str:
    return f"{path.relative_to(ROOT)}:{imp.line} imports {imp.module}"


# -- the rules ----------------------------------------------------------------------------


def test_the_globs_find_every_known_package():
    # a rule checked over nothing would pass: the discovery must see at least today's tree
    assert packages_of("runtime") == {"fleet_shared"}
    assert packages_of("service") >= {"fleet_router", "fleet_workers", "fleet_ledger", "fleet_emulators"}
    assert packages_of("client") == {"modelrouter"}
    assert packages_of("dev tooling") == {"fleet_local"}
    assert packages_of("bench") == {"fleet_bench"}
    assert len(python_files()) > 50


def test_every_python_file_is_where_its_import_path_says():
    misplaced, unimportable = [], []
    for path in python_files():
        name = module_name(path)
        if name is None:
            misplaced.append(str(path.relative_to(ROOT)))
            continue
        try:
            spec = importlib.util.find_spec(name)
        except ImportError as exc:  # a parent package that is not installed (or fails to import)
            unimportable.append(f"{path.relative_to(ROOT)}: `import {name}` fails: {exc!r}")
            continue
        origin = Path(spec.origin).resolve() if spec and spec.origin else None
        if origin != path:
            unimportable.append(f"{path.relative_to(ROOT)} is not what `import {name}` loads ({origin})")
    assert not misplaced, f"outside any package folder <project>/<pkg>/: {misplaced}"
    assert not unimportable, "\n".join(unimportable)


def test_every_folder_with_python_is_a_package_its_pyproject_ships():
    # an editable install finds a folder without __init__.py or one missing from
    # [tool.setuptools] packages; the wheel an image is built from would not
    for project in projects():
        shipped = set(project.pyproject["tool"]["setuptools"]["packages"])
        folders = {f.parent for f in project.folder.rglob("*.py") if "__pycache__" not in f.parts}
        missing_init = [str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists()]
        assert not missing_init, f"folders with Python but no __init__.py: {missing_init}"
        found = {".".join(f.relative_to(project.folder).parts) for f in folders}
        assert shipped == found, f"{project.rel}/pyproject.toml ships {sorted(shipped)}, the folder has {sorted(found)}"


def test_shared_imports_nothing_of_this_repository_but_itself():
    found = [_where(path, imp) for path, imp, _, _ in first_party_edges(("runtime",))]
    assert not found, "shared/ is the runtime only; it may not import a service, the client, the dev tooling or the bench:\n" + "\n".join(found)  # fmt: skip


def test_no_service_imports_another_service():
    services = packages_of("service")
    found = [_where(path, imp) for path, imp, _, top in first_party_edges(("service",)) if top in services]
    assert not found, "services talk over NATS, never by import:\n" + "\n".join(found)


# -- each package installs alone --------------------------------------------------------


def canonicalize_name(name: str) -> str:
    """PEP 503's normal form: `Foo_Bar` and `foo-bar` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def required_names(requirements: list[str]) -> list[str]:
    """The distributions a list of PEP 508 requirements names, leaving out those only an
    extra asks for. (A platform marker is not evaluated: over-counting what an install
    brings can only let an undeclared import through on another platform, never fail here.)"""
    names = []
    for raw in requirements:
        name, _, marker = raw.partition(";")
        if "extra" not in marker:
            names.append(canonicalize_name(re.split(r"[\s\[<>=!~(@]", name.strip(), maxsplit=1)[0]))
    return names


def _installed_closure(name: str, seen: set[str]) -> None:
    try:
        requires = importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
        return
    for dependency in required_names(requires):
        if dependency not in seen:
            seen.add(dependency)
            _installed_closure(dependency, seen)


def declared_closure(project: Project) -> set[str]:
    """Distributions a clean install of ``project`` brings: its pyproject's dependencies
    (first-party ones read from their pyproject, third-party ones from installed metadata)."""
    by_name = {p.name: p for p in projects()}
    seen: set[str] = set()
    todo = [project]
    while todo:
        for name in required_names(todo.pop().pyproject["project"].get("dependencies", [])):
            if name in seen:
                continue
            seen.add(name)
            if name in by_name:
                todo.append(by_name[name])
            else:
                _installed_closure(name, seen)
    return seen


@pytest.mark.parametrize("project", projects(), ids=lambda p: p.rel)
def test_a_package_imports_only_what_its_pyproject_brings(project):
    distributions = importlib.metadata.packages_distributions()
    by_package = {pkg: p.name for p in projects() for pkg in p.packages}
    brought = declared_closure(project) | {project.name}
    undeclared = []
    for path in python_files():
        if owner(path) != project:
            continue
        for imp in imports_of(path):
            top = imp.module.split(".")[0]
            if imp.optional or top in sys.stdlib_module_names:
                continue
            providers = {canonicalize_name(d) for d in distributions.get(top, [])} or {by_package.get(top, f"?{top}")}
            if not providers & brought:
                undeclared.append(f"{_where(path, imp)} (from {', '.join(sorted(providers))})")
    assert not undeclared, (
        f"imports that {project.rel}/pyproject.toml does not bring (declare them there and in "
        "requirements.in, or drop the import):\n" + "\n".join(undeclared)
    )


def test_the_worker_carries_no_asyncpg_and_the_ledger_no_aiohttp():
    by_name = {p.name: p for p in projects()}
    assert "asyncpg" not in declared_closure(by_name["fleet-workers"])
    assert "aiohttp" not in declared_closure(by_name["fleet-ledger"])
    assert {"fleet-local", "fleet-bench"}.isdisjoint(declared_closure(by_name["fleet-shared"]))


# -- every project is installed and checked -------------------------------------------


def _same(listed: set[str], expected: set[str], where: str) -> None:
    assert listed == expected, f"{where}: missing {sorted(expected - listed)}, unknown {sorted(listed - expected)}"


def test_every_project_is_installed_by_make_and_known_to_the_checks():
    folders = {p.rel for p in projects()}
    makefile = (ROOT / "Makefile").read_text()
    packages_line = re.search(r"^PACKAGES\s*:=\s*(.+)$", makefile, re.M)
    no_emit = re.search(r"\$\(foreach p,([^,]+),--no-emit-package", makefile)
    assert packages_line and no_emit, "the Makefile no longer has PACKAGES and LOCK_FLAGS as this test reads them"
    _same(set(packages_line.group(1).split()), folders, "Makefile PACKAGES")
    _same(set(no_emit.group(1).split()), {p.name for p in projects()}, "Makefile LOCK_FLAGS --no-emit-package")
    editable = re.findall(r"^-e \./(\S+)$", (ROOT / "requirements.in").read_text(), re.M)
    _same(set(editable), folders, "requirements.in -e lines")
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    _same(
        set(root["ruff"]["lint"]["isort"]["known-first-party"]), packages_of(*PROJECT_GLOBS), "ruff known-first-party"
    )
    _same(set(root["mypy"]["mypy_path"]), folders, "mypy mypy_path")


# -- the checker itself ------------------------------------------------------------------


def test_imports_sees_every_form_of_import():
    source = (
        "import fleet_router.policy, os\n"
        "from fleet_workers import service\n"
        "from . import sibling\n"
        "from ..up import thing\n"
        "def later():\n"
        "    import fleet_ledger\n"
        "try:\n"
        "    import uvloop\n"
        "except ImportError:\n"
        "    uvloop = None\n"
    )
    found = {(i.module, i.optional) for i in imports(source, "fleet_shared.sub.mod")}
    assert found == {("fleet_router.policy", False), ("os", False), ("fleet_workers", False),
                     ("fleet_shared.sub", False), ("fleet_shared.up", False), ("fleet_ledger", False),
                     ("uvloop", True)}  # fmt: skip

"""The imports of airgap's own code, against what its metadata requires.

A module the code imports that no requirement brings would install fine from tool/ and then fail to
import on the server, behind the air gap. Reading the code's imports at collect time turns that into an
error here, naming the package and the files that import it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from collections.abc import Callable
from pathlib import Path

from packaging.utils import canonicalize_name

from airgap.errors import AirgapError
from airgap.selfinstall.own_wheel import PROJECT, package_files

Log = Callable[[str], None]


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """An import inside `try: ... except ImportError` or `if TYPE_CHECKING:` is optional on purpose."""
    child, cur = node, parents.get(node)
    while cur is not None:
        if isinstance(cur, ast.Try) and child in cur.body:
            for h in cur.handlers:
                names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
                if h.type is None or any(
                    isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError", "Exception")
                    for n in names
                ):
                    return True
        if isinstance(cur, ast.If) and "TYPE_CHECKING" in ast.unparse(cur.test):
            return True
        child, cur = cur, parents.get(cur)
    return False


def imported_distributions(package: Path) -> dict[str, list[str]]:
    """Distribution (canonical name; "a or b" when several provide the module) -> files of the package that
    import it unconditionally.

    Modules are mapped to distributions with this machine's installed packages (`pynvml` is nvidia-ml-py);
    an unknown module is taken to be its own distribution.
    """
    stdlib = set(sys.stdlib_module_names)
    dists = importlib.metadata.packages_distributions()
    out: dict[str, list[str]] = {}
    for rel, path in package_files(package):
        if not rel.endswith(".py"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top in stdlib or top == package.name or _guarded(node, parents):
                    continue
                # A module several distributions provide: any one of them will do.
                key = " or ".join(sorted({canonicalize_name(d) for d in dists.get(top, [top])}))
                files = out.setdefault(key, [])
                if rel not in files:
                    files.append(rel)
    return out


def check_imports(package: Path, closure: set[str], direct: set[str], log: Log) -> None:
    """Refuse a tool/ whose airgap would fail to import on the server: a module the code imports that no
    requirement brings (the metadata forgot it). Better a collect-time error than one behind the air gap.

    closure: canonical names of every distribution tool/ holds; direct: those airgap requires itself.
    """
    imported = imported_distributions(package)

    def among(key: str, names: set[str]) -> bool:
        return any(d in names for d in key.split(" or "))

    indirect = sorted(d for d in imported if among(d, closure) and not among(d, direct) and d != PROJECT)
    if indirect:
        log(
            f"tool: airgap imports {', '.join(indirect)}, which only other packages' requirements bring "
            "(declare them in pyproject.toml so that it stays so)"
        )
    lacking = {d: f for d, f in imported.items() if not among(d, closure) and d != PROJECT}
    if lacking:
        what = "; ".join(f"{d} (imported by {', '.join(files[:3])})" for d, files in sorted(lacking.items()))
        raise AirgapError(
            f"tool/: airgap imports packages its metadata does not require, so the airgap installed from tool/ "
            f"on the server would fail: {what}.",
            "Add them to [project].dependencies in pyproject.toml (and `pip install -e .` again), or collect with "
            "--no-tool.",
        )

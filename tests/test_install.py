"""The install is light: ``pip install gnbench`` (jax, optax, numpy) is enough for the Optax
transforms, the rest is the ``bench`` extra, and every imported package is declared.

The import check runs in a subprocess whose ``sys.meta_path`` refuses the bench packages: one that
neither jax, optax nor numpy installs is refused to everyone; one they do install (``absl``, an
optax dependency) is refused to gnbench's own code and to the README example only.
"""

import ast
import json
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from gnbench.cli import BENCH_HINT, BENCH_MODULES

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
SOURCE_DIRS = ("gnbench", "experiments", "benchmarks")
FIRST_PARTY = {"gnbench", "experiments", "benchmarks", "tests"}
# Import name -> distribution, where they differ (otherwise the name with "_" as "-").
DISTRIBUTION_OF = {
    "absl": "absl-py",
    "orbax": "orbax-checkpoint",
    "ml_collections": "ml-collections",
    "tiktoken_ext": "tiktoken",
    "jaxlib": "jax",
}
BASE = {"jax", "optax", "numpy"}


def _name(requirement: str) -> str:
    """``"orbax-checkpoint>=0.11"`` -> ``"orbax-checkpoint"`` (PEP 503 normalized)."""
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _distribution(module: str) -> str:
    return _name(DISTRIBUTION_OF.get(module, module))


def imported_modules() -> dict[str, set[str]]:
    """Top-level name of every module imported anywhere (lazy imports too) -> importing files;
    a module next to the importing file (a script's sibling) is not a package to declare."""
    out: dict[str, set[str]] = {}
    for folder in SOURCE_DIRS:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    script_dir = not (path.parent / "__init__.py").exists()
                    if script_dir and (path.parent / f"{top}.py").exists():
                        continue  # A script's sibling module (benchmarks/ run as scripts).
                    out.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return out


def third_party(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    return {
        m: files
        for m, files in modules.items()
        if m not in FIRST_PARTY and m not in sys.stdlib_module_names and m != "__future__"
    }


def test_every_imported_package_is_declared():
    declared = {_name(r) for r in PYPROJECT["dependencies"]}
    for requirements in PYPROJECT["optional-dependencies"].values():
        declared |= {_name(r) for r in requirements}
    modules = third_party(imported_modules())
    # The walk sees what it must: the heavy stack, the undeclared-before absl, and `tokenizers`
    # although gnbench/data/tokenizers.py shares its name.
    must = {"jax", "optax", "flax", "orbax", "wandb", "absl", "ml_collections", "tokenizers"}
    assert must <= set(modules)
    undeclared = {m: sorted(f) for m, f in modules.items() if _distribution(m) not in declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_base_is_what_the_optimizers_need_and_the_rest_is_the_bench_extra():
    assert {_name(r) for r in PYPROJECT["dependencies"]} == BASE
    extras = PYPROJECT["optional-dependencies"]
    dev = {"equinox", "pytest", "pytest-timeout", "pytest-xdist", "ruff"}
    assert {_name(r) for r in extras["dev"]} == dev
    bench = {_name(r) for r in extras["bench"]}
    # The CLI's list of bench modules (its "pip install 'gnbench[bench]'" hint) is the extra.
    assert {_distribution(m) for m in BENCH_MODULES} == bench
    # Every package gnbench imports outside the base is in an extra other than dev.
    optional = {_name(r) for extra, reqs in extras.items() if extra != "dev" for r in reqs}
    outside = {_distribution(m) for m in third_party(imported_modules())} - BASE
    assert outside <= optional, outside - optional


def _readme_reuse_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    found = [b for b in blocks if "from gnbench.optim import" in b]
    assert found, "README.md has no example importing gnbench.optim"
    return found[0]


def _base_closure() -> set[str]:
    """Distributions that installing jax, optax and numpy installs (this venv's metadata)."""
    seen, todo = set(), list(BASE)
    while todo:
        name = _name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [r for r in requires if "extra ==" not in r and "extra==" not in r]
    return seen


BLOCKER = """
import importlib.abc, sys
ALWAYS, FROM_GNBENCH, OURS = {always}, {from_gnbench}, {ours}

def importer():
    frame = sys._getframe(2)
    while frame and (frame.f_code.co_filename.startswith("<frozen")
                     or frame.f_code.co_filename.endswith("importlib/__init__.py")):
        frame = frame.f_back
    return frame.f_code.co_filename if frame else ""

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if top in ALWAYS or (top in FROM_GNBENCH and importer().startswith(OURS)):
            raise ModuleNotFoundError(f"No module named {{top!r}} (blocked)", name=top)
        return None

sys.meta_path.insert(0, Blocker())
"""


def _run_blocked(code: str) -> subprocess.CompletedProcess:
    closure = _base_closure()
    always = sorted(m for m in BENCH_MODULES if _distribution(m) not in closure)
    from_gnbench = sorted(m for m in BENCH_MODULES if _distribution(m) in closure)
    ours = (str(REPO / "gnbench"), "README.md")
    prelude = BLOCKER.format(always=always, from_gnbench=from_gnbench, ours=ours)
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu", "HOME": str(Path.home())},
    )


def test_optimizers_and_the_readme_example_need_no_bench_package():
    example = _readme_reuse_example()
    result = _run_blocked(
        f"""
        import json, sys
        import gnbench, gnbench.optim
        exec(compile({example!r}, "README.md", "exec"), {{"__name__": "readme"}})
        bench = {list(BENCH_MODULES)!r}
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in bench)))
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    # Only what optax itself imports (absl.logging) may be loaded; never flax, wandb, ...
    assert {m.split(".")[0] for m in loaded} <= {m for m in BENCH_MODULES if m == "absl"}


@pytest.mark.parametrize(
    "code, module",
    [
        ("import gnbench.model.transformer", "flax"),  # Refused to everyone.
        # absl is refused to gnbench only (optax imports it): cli.py's own import fails.
        ("from gnbench.cli import parse_train_config as p; p(['--config', 'x.py'])", "absl"),
    ],
)
def test_blocker_refuses_bench_imports_from_gnbench(code, module):
    # The check above could pass vacuously if the blocker refused nothing: it does refuse.
    result = _run_blocked(code + "\n")
    assert result.returncode != 0 and f"No module named {module!r} (blocked)" in result.stderr


def test_cli_without_the_bench_extra_fails_with_one_line_naming_the_install():
    result = _run_blocked(
        """
        import sys
        from gnbench.cli import main
        sys.exit(main(["train", "--config", "experiments/tiny.py"]))
        """
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and BENCH_HINT in lines[0], result.stderr

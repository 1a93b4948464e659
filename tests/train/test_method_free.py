"""gnbench/train names no optimizer: what it must know of a method comes from the registry."""

import ast
import re
from pathlib import Path

import gnbench.train

NAMES = re.compile(r"gauss_newton|layerwise|kfac|soap|muon|diag_gn")


def _code_strings_and_names(tree: ast.AST) -> list[tuple[int, str]]:
    """Every identifier, attribute and string constant outside docstrings, with its line."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                out.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            out.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            out.append((node.lineno, node.attr))
        elif isinstance(node, ast.alias):
            out.append((node.lineno, node.name))
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.lineno, node.module))
    return out


def test_train_code_names_no_method():
    folder = Path(gnbench.train.__file__).parent
    found = [
        f"{path.name}:{line}: {text!r}"
        for path in sorted(folder.glob("*.py"))
        for line, text in _code_strings_and_names(ast.parse(path.read_text()))
        if NAMES.search(text)
    ]
    assert not found, "method names in gnbench/train code: " + "; ".join(found)


def test_the_check_sees_a_method_name_in_code():
    source = (
        '"""A docstring may say soap."""\nx = "soap"\nfrom gnbench.optim.approx_gn import kfac\n'
    )
    hits = sorted(t for _, t in _code_strings_and_names(ast.parse(source)) if NAMES.search(t))
    assert hits == ["kfac", "soap"]  # The string and the import; never the docstring.

"""README.md's settings table against what train_gpt.py reads: every environment variable, its default, its group.

train_gpt.py is parsed, not run: each `name = default` in the Hyperparameters class body (a literal or a call, not a
tuple) is the setting NAME, and full-line comments in the class body start a new group; any other variable the
module reads from os.environ (LOCAL_RANK) forms one more group, last. The README's table (under "## Settings") has one row per
variable, `| `NAME` | default | meaning |`, and a bold row `| **group** | | |` before each group. When a setting is
added, removed, moved between groups or given another default, only the table's rows need changing.
"""

import ast
import re

from conftest import ROOT

NON_LITERAL = object()  # a default computed at import (RUN_ID's random id): any non-empty cell matches


def literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return NON_LITERAL


def class_groups(source: str) -> list[list[tuple[str, object]]]:
    """The Hyperparameters settings as groups of (NAME, default), in the class's order."""
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "Hyperparameters")
    lines = source.splitlines()
    groups, last = [[]], cls.lineno
    for node in cls.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and not node.targets[0].id.startswith("_") and not isinstance(node.value, ast.Tuple)):
            continue
        between = lines[last:node.lineno - 1]  # the lines since the previous setting
        if any(line.strip().startswith("#") for line in between) and groups[-1]:
            groups.append([])
        groups[-1].append((node.targets[0].id.upper(), literal(node.value)))
        last = node.end_lineno
    return groups


def environ_reads(source: str) -> list[tuple[str, object]]:
    """Variables read from os.environ outside env(): os.environ.get("NAME", d), and the pairs of a literal
    tuple that a comprehension hands to os.environ.get (`for k, d in (("RANK", 0), ...)`)."""
    found = {}

    def is_environ_get(node):
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and ast.unparse(node.func.value) == "os.environ")

    for node in ast.walk(ast.parse(source)):
        if is_environ_get(node) and node.args and isinstance(node.args[0], ast.Constant):
            found[node.args[0].value] = literal(node.args[1]) if len(node.args) > 1 else None
        if isinstance(node, (ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp)):
            gets = [n for n in ast.walk(node) if is_environ_get(n)]
            for gen in node.generators:
                pairs = literal(gen.iter)
                if gets and isinstance(gen.target, ast.Tuple) and isinstance(pairs, tuple):
                    found.update({name: default for name, default in pairs})
    return list(found.items())


def settings_of(source: str) -> list[list[tuple[str, object]]]:
    groups = class_groups(source)
    in_class = {name for group in groups for name, _ in group}
    others = [(name, d) for name, d in environ_reads(source) if name not in in_class]
    return groups + ([others] if others else [])


def readme_groups(text: str) -> list[list[tuple[str, str]]]:
    """The settings table's rows as groups of (NAME, default cell)."""
    section = text.split("\n## Settings", 1)[1].split("\n## ", 1)[0]
    groups = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if re.fullmatch(r"\*\*.+\*\*", cells[0]):
            groups.append([])
        elif re.fullmatch(r"`[A-Z][A-Z0-9_]*`", cells[0]):
            assert groups, f"setting row before any group row: {line}"
            groups[-1].append((cells[0].strip("`"), cells[1] if len(cells) > 1 else ""))
    return groups


def cell_matches(cell: str, default) -> bool:
    if default is NON_LITERAL:
        return bool(cell)
    value = cell.strip("`")
    if isinstance(default, str):
        return value == default
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return False
    return type(parsed) is type(default) and parsed == default


def disagreements(code_groups, table_groups) -> list[str]:
    problems = []
    code = {name: d for group in code_groups for name, d in group}
    table = {name: cell for group in table_groups for name, cell in group}
    problems += [f"{name}: read by train_gpt.py, missing from the README table" for name in code if name not in table]
    problems += [f"{name}: in the README table, not read by train_gpt.py" for name in table if name not in code]
    problems += [f"{name}: README default {table[name]!r}, train_gpt.py {code[name]!r}"
                 for name in code if name in table and not cell_matches(table[name], code[name])]
    if not problems:
        names = lambda groups: [[name for name, _ in group] for group in groups]  # noqa: E731
        if names(code_groups) != names(table_groups):
            problems.append(f"groups or order differ: train_gpt.py {names(code_groups)}, "
                            f"README {names(table_groups)}")
    return problems


def test_readme_settings_table_matches_train_gpt():
    code = settings_of((ROOT / "train_gpt.py").read_text(encoding="utf-8"))
    table = readme_groups((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(code) > 2 and sum(map(len, code)) > 40  # the parser found the class
    problems = disagreements(code, table)
    assert not problems, "README.md's settings table and train_gpt.py disagree:\n" + "\n".join(problems)


def test_the_comparison_catches_each_kind_of_disagreement():
    source = '''
import os
class Hyperparameters:
    run_id = str(id(0))
    # training
    steps = 10
    lr = 0.5
    # model
    dim = 64
    model_keys = ("dim",)
rank, world = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1)))
'''
    code = settings_of(source)
    assert code == [[("RUN_ID", NON_LITERAL)], [("STEPS", 10), ("LR", 0.5)], [("DIM", 64)],
                    [("RANK", 0), ("WORLD_SIZE", 1)]]
    rows = ["| **run** | | |", "| `RUN_ID` | random | id |", "| **training** | | |", "| `STEPS` | `10` | s |",
            "| `LR` | `0.5` | l |", "| **model** | | |", "| `DIM` | `64` | d |", "| **torchrun** | | |",
            "| `RANK` | `0` | r |", "| `WORLD_SIZE` | `1` | w |"]

    def check(table_rows):
        text = "# x\n\n## Settings\n\n| setting | default | meaning |\n|---|---|---|\n" + "\n".join(table_rows)
        return disagreements(code, readme_groups(text + "\n\n## Next\n"))

    assert check(rows) == []
    assert check([r for r in rows if "`LR`" not in r]) == ["LR: read by train_gpt.py, missing from the README table"]
    assert check(rows + ["| `OLD` | `1` | gone |"]) == ["OLD: in the README table, not read by train_gpt.py"]
    for wrong in ("`11`", "`10.0`", "10 steps"):
        assert check([r.replace("`10`", wrong) for r in rows]) == [f"STEPS: README default {wrong!r}, train_gpt.py 10"]
    regrouped = rows[:4] + rows[5:7] + [rows[4]] + rows[7:]  # LR moved into the model group
    assert check(regrouped)[0].startswith("groups or order differ")

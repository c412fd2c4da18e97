"""docs/reference.md names everything users configure and run: every environment variable
settings.py reads and every management command of the project, so nothing lives only in the code."""

from __future__ import annotations

import ast
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
REFERENCE = (BASE_DIR / "docs" / "reference.md").read_text()
SETTINGS = BASE_DIR / "orchestrator_site" / "settings.py"
COMMANDS = BASE_DIR / "tasks_app" / "management" / "commands"
READERS = {"env_str", "env_bool", "env_int", "env_float", "get", "getenv"}


def called_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def env_vars_read(source: str) -> set[str]:
    """Names passed as a literal first argument to the env_* helpers, os.environ.get or os.getenv."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and called_name(node) in READERS and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.isupper():
                names.add(first.value)
    return names


def test_the_settings_reader_finds_the_variables_it_should():
    found = env_vars_read('import os\nA = env_int("ORCHESTRATOR_X", 1)\nB = os.environ.get("PORT")\nC = d.get("x")')
    assert found == {"ORCHESTRATOR_X", "PORT"}


def test_every_environment_variable_settings_reads_is_in_the_reference():
    names = env_vars_read(SETTINGS.read_text())
    assert {"DATABASE_URL", "REDIS_URL", "ORCHESTRATOR_DELETION_TTL"} <= names  # the reader still reads them
    missing = sorted(name for name in names if f"`{name}`" not in REFERENCE)
    assert not missing, f"settings read from the environment but not in docs/reference.md: {missing}"


def test_every_management_command_is_in_the_reference():
    commands = sorted(p.stem for p in COMMANDS.glob("*.py") if not p.stem.startswith("_"))
    assert "orchestrate" in commands and "worker" in commands
    missing = [name for name in commands if f"`manage.py {name}" not in REFERENCE]
    assert not missing, f"management commands not in docs/reference.md: {missing}"


def test_the_readme_links_the_reference_inside_the_repository():
    readme = (BASE_DIR / "README.md").read_text()
    assert "(docs/reference.md)" in readme and "../shared" not in readme

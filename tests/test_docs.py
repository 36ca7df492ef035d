"""Documentation that must stay in step with the code."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from korium import hookspecs
from korium.plugins import new_plugin_manager

ROOT = Path(__file__).resolve().parents[1]


def test_every_hook_is_documented_with_its_signature() -> None:
    pm = new_plugin_manager()
    specs = {name for name in dir(pm.hook) if name.startswith("korium_")}
    text = (ROOT / "docs" / "hooks.md").read_text()
    headings = dict(re.findall(r"^## (korium_\w+)\(([^)]*)\)$", text, re.MULTILINE))
    assert set(headings) == specs
    for name, args in headings.items():
        spec = getattr(hookspecs, name)
        expected = list(spec.__code__.co_varnames[: spec.__code__.co_argcount])
        assert [a.strip() for a in args.split(",") if a.strip()] == expected, name


def test_every_plugin_directory_is_installed_by_the_readme_command() -> None:
    requirements = (ROOT / "requirements-dev.txt").read_text()
    plugin_dirs = [p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml")]
    for directory in [*plugin_dirs, ROOT / "examples" / "third_party_plugin"]:
        line = f"-e ./{directory.relative_to(ROOT).as_posix()}"
        assert line in requirements.splitlines(), f"{line} missing from requirements-dev.txt"


def test_readme_commands_are_the_ones_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -r requirements-dev.txt" in readme
    assert "<!-- ci:install -->" in readme
    assert "<!-- ci:test -->" in readme
    assert "ci:install" in ci
    assert "ci:test" in ci


def test_plugin_extras_point_at_plugin_distributions() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    names = {
        tomllib.loads(p.read_text())["project"]["name"]
        for p in (ROOT / "plugins").glob("*/pyproject.toml")
    }
    for extra, requirements in extras.items():
        if extra == "dev":
            continue
        for requirement in requirements:
            name = re.split(r"[\[<>=~! ;]", requirement, maxsplit=1)[0]
            assert name in names | {"korium"}, f"extra {extra!r} needs unknown {name!r}"

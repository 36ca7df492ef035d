"""The korium command, run in-process through click's runner and once as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import korium
from korium.cli import cli, default_key_file, main
from korium.identity import NodeIdentity


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"korium, version {korium.__version__}"


def test_plugins_lists_third_party_plugin(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "greeter 0.1.0 (korium-example-greeter)" in result.output
    assert "provides  greeter" in result.output
    assert "node_setup" in result.output


def test_identity_new_then_show(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    result = runner.invoke(cli, ["identity", "new", "--key-file", str(path), "--difficulty", "10"])
    assert result.exit_code == 0, result.output
    saved = NodeIdentity.load(path, difficulty=10)
    assert f"identity  {saved.identity}" in result.output
    assert path.stat().st_mode & 0o777 == 0o600

    shown = runner.invoke(cli, ["identity", "show", "--key-file", str(path)])
    assert shown.exit_code == 0, shown.output
    assert f"identity  {saved.identity}" in shown.output
    assert f"strength  {saved.strength} bits" in shown.output


def test_identity_new_refuses_to_overwrite(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    assert runner.invoke(cli, ["identity", "new", "--key-file", str(path), "--difficulty", "4"])
    before = path.read_bytes()
    result = runner.invoke(cli, ["identity", "new", "--key-file", str(path), "--difficulty", "4"])
    assert result.exit_code == 1
    assert "already exists" in result.output
    assert path.read_bytes() == before
    forced = ["identity", "new", "--key-file", str(path), "--difficulty", "4", "--force"]
    assert runner.invoke(cli, forced).exit_code == 0
    assert path.read_bytes() != before


def test_identity_show_reports_errors_clearly(runner: CliRunner, tmp_path: Path) -> None:
    missing = runner.invoke(cli, ["identity", "show", "--key-file", str(tmp_path / "nope.pem")])
    assert missing.exit_code == 1
    assert "korium identity new" in missing.output

    path = tmp_path / "weak.pem"
    NodeIdentity.generate(4).save(path)
    too_weak = runner.invoke(
        cli, ["identity", "show", "--key-file", str(path), "--difficulty", "40"]
    )
    assert too_weak.exit_code == 1
    assert "40 are required" in too_weak.output


def test_default_key_file_follows_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KORIUM_KEY_FILE", "/tmp/explicit.pem")
    assert default_key_file() == Path("/tmp/explicit.pem")
    monkeypatch.delenv("KORIUM_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/tmp/xdg")
    assert default_key_file() == Path("/tmp/xdg/korium/identity.pem")


def test_plugin_cli_command_is_added(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["korium", "greet", "Ada"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0


def test_installed_command_runs_as_a_process(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("korium")
    if not exe.exists():
        pytest.skip(f"the korium script is not installed next to {sys.executable}")
    env = {**os.environ, "KORIUM_KEY_FILE": str(tmp_path / "k.pem")}
    made = subprocess.run(
        [str(exe), "identity", "new", "--difficulty", "20", "--workers", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert NodeIdentity.load(tmp_path / "k.pem", difficulty=20).strength >= 20
    greeted = subprocess.run(
        [str(exe), "greet", "Ada"], capture_output=True, text=True, timeout=60, check=False
    )
    assert greeted.stdout.strip() == "hello, Ada! (from the greeter plugin)"

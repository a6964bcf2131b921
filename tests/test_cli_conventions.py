"""CLI conventions: --version, `python -m dermsweep`, a --help that imports no heavy library, a description and
help text for everything, shell completion, and one-line errors that cannot drive the terminal."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from dermsweep import __version__, cli
from dermsweep.cli import completion
from dermsweep.errors import DermsweepError


def test_version_and_python_m(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"dermsweep {__version__}"
    done = subprocess.run([sys.executable, "-m", "dermsweep", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"dermsweep {__version__}", done.stderr


def test_help_imports_no_heavy_library():
    """`dermsweep --help` took ~5 s because every command's module (MLflow, scikit-learn, TensorFlow) was imported;
    `dermsweep promote --help` 9 s, because its defaults lived in the modules that do the work."""
    code = (
        "import sys\n"
        "from dermsweep.cli import COMMANDS, main\n"
        "heavy = ('mlflow', 'sklearn', 'tensorflow', 'keras', 'pandas', 'optuna')\n"
        "for words in [['--help']] + [[name, '--help'] for name in COMMANDS]:\n"
        "    try:\n        main(words)\n    except SystemExit:\n        pass\n"
        "    print('HEAVY', words[0], sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    loaded = [line for line in done.stderr.splitlines() if line.startswith("HEAVY") and not line.endswith("[]")]
    assert loaded == [] and done.stderr.count("HEAVY") == len(cli.COMMANDS) + 1, done.stderr
    assert "runs" in done.stdout and "completion" in done.stdout


def test_every_command_has_a_description_and_every_option_help():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(cli.COMMANDS)
    missing = [
        f"{name} {a.option_strings or a.dest}" for name, p in sub.choices.items() for a in p._actions if not a.help
    ]
    assert missing == []
    assert all(p.description for p in sub.choices.values())


def test_a_command_parses_with_only_its_own_module():
    """main() builds only the named command's options; its arguments parse as with the whole parser."""
    args = cli.build_parser(only="runs").parse_args(["runs", "--limit", "3", "--width", "100"])
    assert (args.limit, args.width, args.fn.__module__) == (3, 100, "dermsweep.cli.runs")
    assert cli.command_of(["--tracking-uri", "runs", "promote", "--dry-run"]) == "promote"


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_completion_script(capsys, shell):
    assert cli.main(["completion", shell]) == 0
    script = capsys.readouterr().out
    check = subprocess.run([shell if shell == "bash" else "bash", "-n"], input=script, text=True, timeout=30)
    assert check.returncode == 0
    assert "complete -o default -F _dermsweep dermsweep" in script
    for word in ("runs", "promote", "--metric", "--top-k", "--sweep", "--version"):
        assert word in script
    if shell == "zsh":
        assert script.startswith("autoload -U +X bashcompinit")


def test_completion_completes_in_bash():
    """Sourced in bash, the function completes a command's options from a partial word (no Python run)."""
    script = completion.script(cli.build_parser(), "bash")
    probe = script + '\nCOMP_WORDS=(dermsweep runs --me); COMP_CWORD=2; _dermsweep; echo "${COMPREPLY[@]}"\n'
    done = subprocess.run(["bash"], input=probe, capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == ["--metric"], done.stderr


def test_errors_are_printable(capsys, monkeypatch):
    """A message quoting raw bytes (a TFLite error, a hostile file name) must not put escape sequences on the
    terminal (issue 25)."""

    def fail(args):
        raise DermsweepError("bad model \x1b[31mRED\x1b]0;title\x07 file")

    import dermsweep.cli.runs as runs_command

    monkeypatch.setattr(runs_command, "run", fail)
    rc = cli.main(["runs"])
    err = capsys.readouterr().err
    assert rc == 2 and "\x1b" not in err and "\x07" not in err and "\\x1b[31mRED" in err
    assert len(err.strip().splitlines()) == 1

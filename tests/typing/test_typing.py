"""The types users check against: realistic programs must pass ``mypy --strict``, wrong uses must fail.

The ``user_*.py`` files next to this one are small user programs, and ``bad_uses.py`` holds wrong
uses, each line marked ``# expect: <code>`` with the error codes mypy must report there. None of them
is imported (pytest collects ``test_*.py`` only): mypy runs once on all of them, in a subprocess, with
the project's configuration and the sources on ``MYPYPATH`` (an editable install is an import hook
that mypy cannot follow). Errors in the library itself are left to ``mypy`` over ``src`` and
``integrations`` (``.ci/run``); these tests look at the programs' own lines only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is not installed (the test extra has it): the typing checks need it")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GOOD = sorted(HERE.glob("user_*.py"))
BAD = HERE / "bad_uses.py"

_ERROR = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: (?P<message>.*?)(?:  \[(?P<code>[a-z0-9-]+)\])?$")
_EXPECT = re.compile(r"#\s*expect:\s*(?P<codes>[a-z0-9-]+(?:\s*,\s*[a-z0-9-]+)*)\s*$")

Errors = dict[Path, list[tuple[int, str, str]]]


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> Errors:
    """mypy --strict over every program here: ``{file: [(line, code, message), ...]}``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MYPY")}
    env["MYPYPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "integrations")])
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(tmp_path_factory.mktemp("mypy-cache")),
        "--no-error-summary",
        "--no-pretty",
        "--no-color-output",
        *(str(path) for path in [*GOOD, BAD]),
    ]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    # 0: no errors, 1: errors reported; anything else (2) is mypy failing to check at all.
    assert done.returncode in (0, 1), f"mypy did not run ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    errors: Errors = defaultdict(list)
    for line in done.stdout.splitlines():
        match = _ERROR.match(line)
        if match is not None:
            path = (ROOT / match["path"]).resolve()
            errors[path].append((int(match["line"]), match["code"] or "?", match["message"]))
    return errors


def test_the_programs_are_there() -> None:
    assert {path.name for path in GOOD} >= {
        "user_asgi.py",
        "user_wsgi.py",
        "user_starlette.py",
        "user_hooks.py",
    }
    assert BAD.is_file()


@pytest.mark.parametrize("program", GOOD, ids=[path.name for path in GOOD])
def test_user_program_passes_mypy_strict(mypy_errors: Errors, program: Path) -> None:
    found = [f"{program.name}:{line}: {message}  [{code}]" for line, code, message in mypy_errors[program]]
    assert found == [], "\n".join(found)


def _expected() -> set[tuple[int, str]]:
    expected = set()
    for number, text in enumerate(BAD.read_text().splitlines(), start=1):
        match = _EXPECT.search(text)
        if match is not None:
            expected |= {(number, code.strip()) for code in match["codes"].split(",")}
    return expected


def test_wrong_uses_fail_mypy_strict(mypy_errors: Errors) -> None:
    expected = _expected()
    # The case that started it: a Flask consent hook written for flask.Request, untracking every request.
    consent_line = next(
        number
        for number, text in enumerate(BAD.read_text().splitlines(), start=1)
        if "consent=consent_of_request" in text
    )
    assert (consent_line, "arg-type") in expected
    found = {(line, code) for line, code, _ in mypy_errors[BAD]}
    said = "\n".join(f"bad_uses.py:{line}: {message}  [{code}]" for line, code, message in mypy_errors[BAD])
    assert found - expected == set(), f"unexpected errors:\n{said}"
    assert expected - found == set(), f"errors mypy did not report (line, code); it said:\n{said}"

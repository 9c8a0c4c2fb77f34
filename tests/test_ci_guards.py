"""With CI set, a test whose tool is missing fails instead of skipping: a CI run cannot pass by
skipping the browser tests or step 01's polars path."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, missing


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_a_missing_tool_fails_the_test_when_ci_is_set(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="^CI is set, so this cannot be skipped: needs chromium"):
        missing("needs chromium")


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_a_missing_tool_skips_the_test_on_a_researchers_machine(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="^needs chromium$"):
        missing("needs chromium")


def run_without_polars(tmp_path, ci: str) -> subprocess.CompletedProcess:
    """Step 01's engine tests in a child process where `import polars` fails."""
    (tmp_path / "polars.py").write_text("raise ImportError('polars is not here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "CI": ci}
    test = "tests/test_01_download_and_filter.py::test_each_keyword_is_credited_in_the_order_given"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_without_polars_the_engine_tests_fail_in_ci_and_skip_elsewhere(tmp_path):
    ci = run_without_polars(tmp_path, "true")  # a fixture that fails counts as an error
    assert ci.returncode == 1, ci.stdout
    assert "1 passed, 1 error" in ci.stdout and "CI is set, so this cannot be skipped: polars" in ci.stdout
    local = run_without_polars(tmp_path, "")
    assert local.returncode == 0, local.stdout
    assert "1 passed, 1 skipped" in local.stdout

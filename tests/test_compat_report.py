"""tools/compat_report.py (``make test-compat``) reads pytest's JUnit XML and keeps the history."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("compat_report", ROOT / "tools" / "compat_report.py")
assert _spec is not None and _spec.loader is not None
compat_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compat_report)

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5">
<testcase classname="tests.infer.test_a" name="test_ok"/>
<testcase classname="tests.infer.test_a" name="test_ok2"/>
<testcase classname="tests.infer.test_a" name="test_bad[x]">
<failure message="assert 1 == 2&#10;more">tb</failure></testcase>
<testcase classname="tests.models.test_b" name="test_err">
<error message="ImportError: no arviz">tb</error></testcase>
<testcase classname="tests.models.test_b" name="test_skip"><skipped message="gpu"/></testcase>
</testsuite></testsuites>
"""


def test_summary_counts_and_names_every_failing_test(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    counts, failing = compat_report._summary(junit)
    assert counts == {"tests": 5, "failures": 1, "errors": 1, "skipped": 1}
    assert failing == [
        "- `tests/infer/test_a.py::test_bad[x]` (failure): `assert 1 == 2`",
        "- `tests/models/test_b.py::test_err` (error): `ImportError: no arviz`",
    ]
    assert compat_report._summary(tmp_path / "missing.xml") == (dict.fromkeys(counts, 0), [])


def test_history_keeps_only_the_dated_rows(tmp_path):
    page = tmp_path / "compat.md"
    rows = ["| 2026-12-01 15:07 UTC | 3.12.1 | 2.14.1 |", "| 2026-11-30 | 3.12.1 |"]
    page.write_text("\n".join(["# t", "", rows[0], "| date | Python |", rows[1], ""]))
    assert compat_report._history(page) == rows
    assert compat_report._history(tmp_path / "none.md") == []

"""Run every test suite, each in its own pytest process, and print one closing tally.

Every service's code is a package named ``app``, so two services can't share a pytest process:
each suite runs from its own directory (``libs/``, each ``services/<name>/``, then ``tests/``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def suites(only: list[str]) -> list[Path]:
    found = [ROOT / "libs"]
    found += sorted(p.parent for p in (ROOT / "services").glob("*/tests") if p.is_dir())
    found.append(ROOT)  # top-level tests/
    if only:
        found = [s for s in found if s.name in only or str(s.relative_to(ROOT)) in only]
    return found


def tally(junit: Path) -> tuple[int, int, int]:
    if not junit.exists():
        return 0, 1, 0
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    total = int(suite.get("tests", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    return total - failed - skipped, failed, skipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("only", nargs="*", help="suite directories to run (default: all)")
    args, extra = parser.parse_known_args()
    passed = failed = skipped = 0
    bad: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, suite in enumerate(suites(args.only)):
            name = str(suite.relative_to(ROOT)) if suite != ROOT else "tests"
            tests_dir = "tests"
            if not (suite / tests_dir).is_dir():
                continue
            junit = Path(tmp) / f"{i}.xml"
            print(f"\n===== {name} =====", flush=True)
            start = time.monotonic()
            code = subprocess.call(
                [sys.executable, "-m", "pytest", tests_dir, f"--junitxml={junit}", *extra],
                cwd=suite,
            )
            p, f, s = tally(junit)
            if code not in (0, 5) and f == 0:
                f = 1  # pytest failed without a failing test (collection or usage error)
            print(f"----- {name}: {p} passed, {f} failed, {s} skipped "
                  f"in {time.monotonic() - start:.1f}s", flush=True)
            passed, failed, skipped = passed + p, failed + f, skipped + s
            if f:
                bad.append(name)
    print()
    if bad:
        print("failing suites: " + ", ".join(bad))
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())

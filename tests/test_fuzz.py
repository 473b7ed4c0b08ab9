"""The fuzz suite (tests/fuzz_ops.py) in a child process: a crash or a hang is caught and reported
with the case it happened in. ``--fuzz-cases N`` (default 5000, about 10 s) and ``--fuzz-seed S`` choose the run."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_fuzz_public_api(request, tmp_path):
    cases = request.config.getoption("--fuzz-cases")
    seed = request.config.getoption("--fuzz-seed")
    out = tmp_path / "fuzz.json"
    try:
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(HERE, "fuzz_ops.py"),
                "--cases",
                str(cases),
                "--seed",
                str(seed),
                "--json",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=60 + 0.5 * cases,
        )
    except subprocess.TimeoutExpired as e:
        last = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        raise AssertionError(f"the fuzzer hung (last: {last})") from None
    last = result.stderr.strip().splitlines()[-1:] if result.stderr.strip() else []
    assert result.returncode in (0, 1), f"the fuzzer crashed with code {result.returncode} in {last}"
    summary = json.loads(out.read_text())
    assert summary["cases"] == cases
    assert not summary["violations"], json.dumps(summary["violations"][:10], indent=1)
    assert summary["calls_ok"] > cases // 2 and summary["rejected"] > 0  # it exercises both paths

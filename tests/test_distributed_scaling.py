"""bench/distributed_scaling.py's split-video part runs end to end (--quick: the tests' tiny model, tiny sizes): both
strategies on 1 and 2 gloo ranks, every column filled, and the 2-rank video equal to the 1-rank one. No timing is
asserted: speed lives in the bench's table, not in tests."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_split_rows_run_and_two_ranks_make_the_one_rank_video(tmp_path):
    out = tmp_path / "scaling.json"
    command = [sys.executable, os.path.join(ROOT, "bench", "distributed_scaling.py"), "--parts", "split", "--quick",
               "--json", str(out)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"hierarchical", "co-denoise"}
    for strategy, (one, two) in rows.items():
        assert (one["ranks"], two["ranks"]) == (1, 2), strategy
        assert two["max_difference"] <= 1e-5, strategy
        assert one["kb_per_step"] == [0.0] and len(two["kb_per_step"]) == 2 and min(two["kb_per_step"]) > 0, strategy
        assert two["limit"] > 1 and all(row["seconds"] > 0 and row["wall_s"] >= row["seconds"] for row in (one, two))
    # The printed table: a row per strategy and rank count, the difference column last.
    table = completed.stdout.split("max |2 - 1|")[1].splitlines()[1:5]
    printed = [f"{row['max_difference']:.1e}" for runs in rows.values() for row in runs]
    assert [line.split()[-1] for line in table] == printed
    assert "goal: speed-up >= 1.6x" in completed.stdout

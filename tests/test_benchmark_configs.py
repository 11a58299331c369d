"""benchmarks/train_step.py runs every shipped config and configs in salt-ml's schema.

One Python process times two steps of each config at a small batch on demo data with the
classes the config expects: the figures it prints must be there and be positive, for the packed
and, for the transformer configs, the padded layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from salt.demo import write_demo_dataset
from tests.conftest import CONFIGS, REPO, SHIPPED_CONFIGS, run_python

pytestmark = pytest.mark.slow  # end-to-end runs of `salt`

SALTML = Path(__file__).parent / "saltml_configs"
GHOST = "ghostbjets,ghostcjets,ghostsjets,ghostudjets,ghostgjets,ghosttaujets"

#: (label, config, demo classes or None for the default, attention)
CASES = [
    *[(name, CONFIGS / f"{name}.yaml", None, "packed") for name in SHIPPED_CONFIGS],
    ("saltml-GN2", SALTML / "GN2.yaml", "bjets,cjets,ujets,taujets", "packed"),
    ("saltml-GN3", SALTML / "GN3.yaml", GHOST, "packed"),
    ("saltml-GN3-padded", SALTML / "GN3.yaml", GHOST, "padded"),
]

_DRIVER = """
import json, sys
sys.path.insert(0, "benchmarks")
import train_step

results = {}
for label, args in json.loads(sys.argv[1]).items():
    try:
        results[label] = train_step.main(args)
    except BaseException as exc:  # one broken config must not hide the others
        results[label] = {"error": repr(exc)}
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("bench_configs")
    files: dict[str | None, dict[str, Path]] = {}
    commands = {}
    for label, config, classes, attention in CASES:
        if classes not in files:
            files[classes] = write_demo_dataset(
                root / f"demo_{len(files)}", num_jets=400, seed=5, classes=classes, splits=["train"]
            )
        data = files[classes]
        commands[label] = [
            "--config", str(config), "--train-file", str(data["train"]),
            "--batch-size", "50", "--steps", "1", "--warmup", "1", "--precision", "32",
            "--accelerator", "cpu", "--attention", attention,
        ]  # fmt: skip
    result = run_python(_DRIVER, [json.dumps(commands)], REPO, env={"XDG_CACHE_HOME": str(root)})
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULTS "))
    return json.loads(line.removeprefix("RESULTS "))


@pytest.mark.parametrize("label", [case[0] for case in CASES])
def test_train_step_times_the_config(results, label):
    figures = results[label]
    assert "error" not in figures, figures.get("error")
    assert figures["steps_timed"] == 1 and figures["batch_size"] == 50
    for key in ("jets_per_s", "s_per_step", "cpu_s_per_step", "peak_rss_mb"):
        assert figures[key] > 0, key
    attention = next(case[3] for case in CASES if case[0] == label)
    assert figures["attention"] == attention and figures["precision"] == "32-true"

"""The 3D runs that learned the 12-frame cue against those that did not, per 3D variant, from
the study's records (docs/results.md, "Does attending across time help?"):

    python results/study_learners.py [results/synthetic_study.json]

A run learned the cue when its ambiguous-pixel mIoU exceeds the study's threshold
(`LEARNED` in scripts/study_temporal.py: 50 %). For each group: the ambiguous-pixel mIoU,
the mIoU over all pixels and mVC_8 (min-max and mean), and the ambiguous-pixel mIoU with every
gamma set to 0 at test time. The 3D-minus-2D comparisons themselves (Welch's intervals,
Mann-Whitney) are in the JSON's `comparisons`, written by the study.
"""

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from study_temporal import LEARNED  # noqa: E402

path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "synthetic_study.json"
runs = json.loads(path.read_text())["runs"]


def pct(rs: list[dict], key: str, ablated: bool = False) -> list[float]:
    return [100 * (r["ablated"] if ablated else r)[key] for r in rs]


def span(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f} (mean {statistics.mean(values):.1f})"


for variant in ("cca3d", "ccnet3d", "shift34_ccnet3d"):
    mine = [r for r in runs if r["variant"] == variant]
    if not mine:
        continue
    for name, rs in (("learned", [r for r in mine if r["mIoU_ambiguous"] > LEARNED]),
                     ("missed", [r for r in mine if r["mIoU_ambiguous"] <= LEARNED])):
        if not rs:
            print(f"{variant}: {name} the cue: 0 of {len(mine)} runs")
            continue
        print(f"{variant}: {name} the cue: {len(rs)} of {len(mine)} runs (seeds "
              f"{', '.join(str(r['seed']) for r in rs)})",
              *(f"{k} {span(pct(rs, k))}" for k in ("mIoU_ambiguous", "mIoU", "mVC_8")),
              f"gamma = 0 at test: ambiguous {span(pct(rs, 'mIoU_ambiguous', True))}", sep="; ")

"""The 2D-vs-3D comparison of docs/results.md ("Twice the schedule and ten seeds"), from the runs
in this folder's synthetic_study.json:

    python results/study_3200steps/stats.py

For the ambiguous pixels, all pixels, the dropout frames, mVC_8 and flicker: 3D CCA minus 2D
CCA (mean over the seeds) with Welch's 95 % interval, and the one-sided Mann-Whitney test on
the ambiguous pixels; then the 3D runs that learned the cue (ambiguous-pixel mIoU > 50 %)
against those that did not.
"""

import json
import statistics
from pathlib import Path

from scipy import stats

runs = json.loads((Path(__file__).parent / "synthetic_study.json").read_text())["runs"]
by = {v: [r for r in runs if r["variant"] == v] for v in ("cca3d", "cca2d")}


def pct(rs: list[dict], key: str, ablated: bool = False) -> list[float]:
    return [100 * (r["ablated"] if ablated else r)[key] for r in rs]


for key in ("mIoU_ambiguous", "mIoU", "mIoU_corrupted", "mVC_8", "flicker"):
    a, b = pct(by["cca3d"], key), pct(by["cca2d"], key)
    t = stats.ttest_ind(a, b, equal_var=False)
    ci = t.confidence_interval(0.95)
    print(f"{key:15s} 3D - 2D {statistics.mean(a) - statistics.mean(b):+6.1f}  "
          f"95 % [{ci.low:+.1f}, {ci.high:+.1f}]  Welch p {t.pvalue:.2g}")
a, b = pct(by["cca3d"], "mIoU_ambiguous"), pct(by["cca2d"], "mIoU_ambiguous")
print("Mann-Whitney (3D > 2D, ambiguous pixels): p =",
      f"{stats.mannwhitneyu(a, b, alternative='greater').pvalue:.2g}")
for name, rs in (("learned", [r for r in by["cca3d"] if r["mIoU_ambiguous"] > 0.5]),
                 ("did not learn", [r for r in by["cca3d"] if r["mIoU_ambiguous"] <= 0.5])):
    print(f"3D runs that {name} the cue ({len(rs)})",
          *(f"{k} {min(pct(rs, k)):.1f}-{max(pct(rs, k)):.1f} "
            f"(mean {statistics.mean(pct(rs, k)):.1f})"
            for k in ("mIoU_ambiguous", "mIoU", "mVC_8")),
          f"gamma = 0 at test: ambiguous {min(pct(rs, 'mIoU_ambiguous', True)):.1f}-"
          f"{max(pct(rs, 'mIoU_ambiguous', True)):.1f}", sep="; ")

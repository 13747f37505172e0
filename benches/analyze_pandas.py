"""The straightforward pandas + scipy version of `abgate analyze`, for comparison.

Run: python3 benches/analyze_pandas.py target/bench-events/bench-2000000.jsonl
Needs: pip install pandas scipy

Same rules as abgate: first exposure per (experiment, unit); outcomes count only after it;
binomial = any value > 0, continuous = sum; exposed units without outcomes count as 0;
units in two variants are excluded; pooled z-test (binomial) and Welch t-test (continuous).
"""
import json
import sys
import time

import pandas as pd
from scipy import stats

METRICS = {"ranker_v2": {"conversion": "binomial", "revenue": "continuous"},
           "system_prompt": {"conversion": "binomial"}}
CONTROL = "control"

t0 = time.time()
df = pd.read_json(sys.argv[1], lines=True)
df["order"] = range(len(df))
exp = df[df["type"] == "exposure"][["order", "unit_id", "assignments"]].explode("assignments")
exp["experiment"] = exp["assignments"].map(lambda a: a["experiment"])
exp["variant"] = exp["assignments"].map(lambda a: a["variant"])
first = exp.groupby(["experiment", "unit_id"]).agg(first=("order", "min"), variant=("variant", "first"),
                                                    nvar=("variant", "nunique")).reset_index()
first = first[first["nvar"] == 1]
out = df[df["type"] == "outcome"][["order", "unit_id", "metric", "value"]]
for name, metrics in METRICS.items():
    units = first[first["experiment"] == name]
    print(f"experiment {name}: units {units['variant'].value_counts().to_dict()}")
    joined = out.merge(units, on="unit_id")
    joined = joined[joined["order"] > joined["first"]]
    for metric, kind in metrics.items():
        m = joined[joined["metric"] == metric]
        if kind == "binomial":
            per = m[m["value"] > 0].groupby("unit_id").size().clip(upper=1)
        else:
            per = m.groupby("unit_id")["value"].sum()
        vals = units.set_index("unit_id")[["variant"]].join(per.rename("y")).fillna({"y": 0.0})
        c = vals[vals["variant"] == CONTROL]["y"]
        for v in sorted(set(vals["variant"]) - {CONTROL}):
            t = vals[vals["variant"] == v]["y"]
            if kind == "binomial":
                p = (c.sum() + t.sum()) / (len(c) + len(t))
                se = (p * (1 - p) * (1 / len(c) + 1 / len(t))) ** 0.5
                z = (t.mean() - c.mean()) / se
                pv = 2 * stats.norm.sf(abs(z))
            else:
                pv = stats.ttest_ind(t, c, equal_var=False).pvalue
            print(f"  {metric} {v}: control {c.mean():.4f} treatment {t.mean():.4f} p={pv:.4g}")
print(f"pandas+scipy: {len(df)} lines in {time.time() - t0:.2f}s")

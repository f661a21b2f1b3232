"""Prints the benchmark table from the result files: per system, supervised and total tokens/s, step time
median/min/max, peak RSS, last loss, and dn/peer ratios. Usage: table.py LABEL DN.json... -- PEER.json..."""
import json
import statistics
import sys

label = sys.argv[1]
split = sys.argv.index("--")
groups = {"dn": sys.argv[2:split], "peer": sys.argv[split + 1:]}
rows = {}
for system, files in groups.items():
    runs = [json.load(open(f)) for f in files]
    steps = [s for r in runs for s in r["step_seconds"]]
    seconds = sum(r["seconds"] for r in runs)
    rows[system] = {
        "name": runs[0]["system"],
        "sup": sum(r["supervised_tokens"] for r in runs) / seconds,
        "tok": sum(r["tokens"] for r in runs) / seconds,
        "median": statistics.median(steps), "min": min(steps), "max": max(steps),
        "rss": max(r["peak_rss_mib"] for r in runs), "loss": runs[-1]["last_loss"],
    }
print(f"\n{label}")
print(f"{'system':<48} {'sup tok/s':>10} {'tok/s':>8} {'step med/min/max s':>20} {'peak RSS MiB':>13} {'last loss':>10}")
for r in rows.values():
    steps = f"{r['median']:.1f}/{r['min']:.1f}/{r['max']:.1f}"
    print(f"{r['name']:<48} {r['sup']:>10.1f} {r['tok']:>8.1f} {steps:>20} {r['rss']:>13.0f} {r['loss']:>10.4f}")
d, p = rows["dn"], rows["peer"]
print(f"{'ratio dn/peer':<48} {d['sup'] / p['sup']:>10.2f} {d['tok'] / p['tok']:>8.2f} {d['median'] / p['median']:>20.2f} {d['rss'] / p['rss']:>13.2f}")

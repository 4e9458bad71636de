"""The table: absolute figures, Jobstead's ratios to each peer, and the issue's targets.

Written to ``bench/results/latest.md`` (committed), raw runs to
``bench/results/run-*.json`` (git-ignored), and the summary into README.md
between the ``bench:latest`` markers of its Performance section. A quick
(smoke) run writes ``bench/results/quick.md`` only: its figures are not the
benchmark's.

The closing note's "why" is hand-written in ``bench/analysis.md`` (it comes
from reading profiles, not from the figures) and is copied in verbatim.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from . import flow, workflows
from .mariadb import lines as mariadb_lines

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
ANALYSIS = HERE / "analysis.md"
START, END = "<!-- bench:latest:start -->", "<!-- bench:latest:end -->"
PEERS = ("pgqueuer", "procrastinate", "oban", "chancy")


def peers_of(results: dict[str, Any]) -> list[str]:
    """The peers this run measured, in the table's order."""
    return [p for p in PEERS if p in results["versions"]]


def best_peer(results: dict[str, Any], metric: str, *, lower: bool = False) -> tuple[str | None, float | None]:
    """The peer with the best median on ``metric`` (highest, or lowest for latencies)."""
    values = [(p, v) for p in peers_of(results) if (v := med(results, metric, p))]
    if not values:
        return None, None
    return (min if lower else max)(values, key=lambda pv: pv[1])


def med(results: dict[str, Any], metric: str, system: str) -> float | None:
    runs = results["figures"].get(metric, {}).get(system)
    return statistics.median(runs) if runs else None


def capped(results: dict[str, Any], metric: str, system: str) -> bool:
    return any(r["capped"] for r in results["runs"].get(metric, {}).get(system, []))


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if unit == "ms":
        return f"{value:.1f}"
    return f"{value:,.0f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or not b:
        return "n/a"
    r = a / b
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"


@dataclass
class Target:
    text: str
    measured: str
    met: bool
    shortfall: str


def targets(results: dict[str, Any]) -> list[Target]:
    j4, q4, p4 = (med(results, "drain_4", s) for s in ("jobstead", "pgqueuer", "procrastinate"))
    bulk = med(results, "enqueue_bulk", "jobstead")
    p99 = med(results, "latency_p99", "jobstead")
    small, large = med(results, "history_small", "jobstead"), med(results, "history_large", "jobstead")
    out: list[Target] = []
    for peer, value, want in (("pgqueuer", q4, 1.5), ("procrastinate", p4, 10.0)):
        if j4 and value:
            got = j4 / value
            out.append(
                Target(
                    f"drain throughput, 4 processes, >= {want:g}x {peer}",
                    f"{got:.2f}x",
                    got >= want,
                    f"at {got / want:.0%} of the target: Jobstead needs {want / got:.1f}x its throughput",
                )
            )
    if bulk:
        out.append(
            Target(
                "bulk defer >= 20,000 jobs/s",
                f"{bulk:,.0f} jobs/s",
                bulk >= 20_000,
                f"at {bulk / 20_000:.0%} of the target ({20_000 / bulk:.1f}x short)",
            )
        )
    if p99 is not None:
        out.append(
            Target(
                "p99 defer-to-start < 20 ms at 200 jobs/s",
                f"{p99:.1f} ms",
                p99 < 20,
                f"{p99 - 20:.1f} ms over ({p99 / 20:.1f}x the target)",
            )
        )
    if small and large:
        cost = small / large  # cost per job grows as throughput falls
        out.append(
            Target(
                f"claim cost with {results['settings']['history_large']:,} finished jobs within 10% of "
                f"{results['settings']['history_small']:,}",
                f"{cost - 1:+.0%} cost per job",
                cost <= 1.10,
                f"{cost - 1.10:.0%} beyond the 10% allowance",
            )
        )
    return out


def targets_19(results: dict[str, Any]) -> list[Target]:
    """Issue 19's targets: every row at or ahead of the best peer; the steady state's bounds."""
    out: list[Target] = []
    for metric, label, lower in (
        ("drain_1", "drain, 1 process", False),
        ("enqueue_single", "single defer", False),
        ("enqueue_bulk", "bulk defer", False),
        ("latency_p50", "defer-to-start p50", True),
        ("latency_p99", "defer-to-start p99", True),
    ):
        j = med(results, metric, "jobstead")
        peer, best = best_peer(results, metric, lower=lower)
        if j and best:
            got = best / j if lower else j / best
            out.append(Target(f"{label} >= best peer ({peer})", f"{got:.2f}x", got >= 1.0, f"at {got:.0%} of it"))
    j4 = med(results, "drain_4", "jobstead")
    peer, best = best_peer(results, "drain_4")
    if j4 and best:
        got = j4 / best
        out.append(
            Target(f"drain, 4 processes, >= 1.3x best peer ({peer})", f"{got:.2f}x", got >= 1.3, f"at {got / 1.3:.0%}")
        )
    st = results["runs"].get("steady")
    if st and len(st["levels"]) == 3:
        mid, high = st["levels"][1], st["levels"][2]
        counts = [n for _, n in mid["backlog"]] or [0]
        bounded = counts[-1] <= max(1_000, 0.1 * mid["offered"])
        out.append(
            Target(
                "steady state at 90%: backlog bounded, p99 < 25 ms",
                f"last backlog {counts[-1]:,}, p99 {mid['p99_ms']:.1f} ms",
                bounded and mid["p99_ms"] < 25,
                "backlog grew" if not bounded else f"p99 {mid['p99_ms'] - 25:.1f} ms over",
            )
        )
        out.append(
            Target(
                "steady state at 120%: slots busy >= 85%",
                f"{high['busy']:.0%}",
                high["busy"] >= 0.85,
                f"{0.85 - high['busy']:.0%} short",
            )
        )
    return out + scale_targets(results)


def steady_table(results: dict[str, Any]) -> list[str]:
    """The steady-state workload (``bench/steady.py``): one row per offered load."""
    st = results["runs"].get("steady")
    if not st:
        return []
    cap = st["capacity"]
    lines = [
        "",
        f"Steady state (Jobstead): a producer process defers 5-15 ms jobs at a fixed rate to "
        f"{results['settings']['processes']} worker processes x 25 slots (the slots allow 10,000 jobs/s); "
        f"capacity measured as a drain of queued such jobs: {cap:,.0f} jobs/s. "
        f"{results['settings']['steady_seconds']:g} s measured after {results['settings']['steady_warmup']:g} s "
        "of warm-up, one run per load.",
        "",
        "| Offered (share of capacity) | achieved jobs/s | defer-to-start p50 / p95 / p99 (ms) | slots busy | "
        "backlog first / largest / last |",
        "|---|--:|--:|--:|--:|",
    ]
    for level in st["levels"]:
        counts = [n for _, n in level["backlog"]] or [0]
        lines.append(
            f"| {level['offered']:,.0f}/s ({level['offered'] / cap:.0%}) | {level['throughput']:,.0f} | "
            f"{level['p50_ms']:.1f} / {level['p95_ms']:.1f} / {level['p99_ms']:.1f} | {level['busy']:.0%} | "
            f"{counts[0]:,} / {max(counts):,} / {counts[-1]:,} |"
        )
    return lines


#: The deep drain's stretches, as ``bench.scale`` names them, with the report's words.
STRETCHES = (("start", "first tenth"), ("middle", "middle tenth (45-55%)"), ("end", "last tenth"))


def scale_targets(results: dict[str, Any]) -> list[Target]:
    """The scale rows' verdicts: the deep drain flat within 20%, and at or ahead of the best peer on it."""
    out: list[Target] = []
    rates = [med(results, f"deep_{name}", "jobstead") for name, _ in STRETCHES]
    if all(rates):
        values = [r for r in rates if r]
        low = min(values) / max(values)
        out.append(
            Target(
                "deep-queue drain flat: start, middle and end within 20% of each other",
                " / ".join(f"{r:,.0f}" for r in values) + f" jobs/s, slowest at {low:.0%} of fastest",
                low >= 0.8,
                f"the slowest stretch is {1 - low:.0%} below the fastest ({1 - low - 0.2:.0%} beyond the 20%)",
            )
        )
    j = med(results, "deep", "jobstead")
    peer, best = best_peer(results, "deep")
    if j and best:
        got = j / best
        out.append(Target(f"deep-queue drain >= best peer ({peer})", f"{got:.2f}x", got >= 1.0, f"at {got:.0%} of it"))
    return out


def scale_lines(results: dict[str, Any]) -> list[str]:
    """The scale rows (``bench/scale.py``); a note instead when this run did not measure them."""
    s = results["settings"]
    procs = s["processes"]
    lines: list[str] = []
    deep_peers = [p for p in PEERS if med(results, "deep", p)]
    if med(results, "deep", "jobstead"):
        runs = results["runs"]["deep"]["jobstead"]
        lines += [
            "",
            f"Deep queue (a `BENCH_SCALE=1` row): {s['deep_jobs']:,} ready no-op jobs (deferred with the bulk API, "
            "then VACUUM ANALYZE "
            f"and CHECKPOINT) drained by {procs} processes that all start on the full queue; jobs finished "
            "(durably recorded) per second over the whole drain and in three stretches of it, from the workers' "
            f"reports after each completion write. Median of {len(runs)} run(s), each on a fresh fill.",
            "",
            "| Deep queue, "
            + f"{procs} processes (jobs/s) | Jobstead | "
            + "".join(f"{p} | " for p in deep_peers)
            + "".join(f"Jobstead/{p} | " for p in deep_peers).rstrip(),
            "|---|--:|" + "--:|" * 2 * len(deep_peers),
        ]
        for metric, label in (("deep", "whole drain"), *((f"deep_{n}", text) for n, text in STRETCHES)):
            j = med(results, metric, "jobstead")
            cells = [fmt(j), *(fmt(med(results, metric, p)) for p in deep_peers)]
            cells += [ratio(j, med(results, metric, p)) for p in deep_peers]
            lines.append(f"| {label} | {' | '.join(cells)} |")
        flat = []
        for system in ("jobstead", *deep_peers):
            values = [med(results, f"deep_{n}", system) or 0.0 for n, _ in STRETCHES]
            flat.append(f"{min(values) / max(values):.0%}" if max(values) else "n/a")
        lines.append(f"| slowest stretch / fastest (target >= 80%) | {' | '.join(flat)} |{' |' * len(deep_peers)}")
        notes = []
        for system in ("jobstead", *deep_peers):
            done = results["runs"]["deep"][system]
            logged: dict[str, int] = {}
            for r in done:
                for kind, count in r.get("worker_log", {}).items():
                    logged[kind] = logged.get(kind, 0) + count
            tenths = " / ".join(fmt(statistics.median(t)) for t in zip(*(r["tenths"] for r in done), strict=True))
            text = (
                f"**{system}**: by tenths {tenths} jobs/s; up to "
                f"{max(r.get('peak_unrecorded', 0) for r in done):,} jobs started and not yet recorded as finished"
            )
            reruns = sum(r.get("reruns", 0) for r in done)
            if reruns:
                text += f"; {reruns:,} jobs ran twice in all"
            if logged:
                text += "; worker logs: " + ", ".join(
                    f"{kind.replace('_', ' ')} {n:,} lines" for kind, n in logged.items()
                )
            notes.append(text)
        lines += ["", *(f"- {n}" for n in notes)]
    one, many = med(results, "spread_one", "jobstead"), med(results, "spread_many", "jobstead")
    huge, base = med(results, "history_huge", "jobstead"), med(results, "history_base", "jobstead")
    if one or huge:
        lines += ["", "| Scale, Jobstead, " + f"{procs} processes | jobs/s | relative |", "|---|--:|--:|"]
    if one and many:
        n = s["spread_jobs"]
        lines += [
            f"| Drain {n:,} queued jobs of one handler in one queue (every run) | {fmt(one)} | 1.00x |",
            f"| Drain {n:,} queued jobs spread over {s['spread_handlers']:,} handlers in {s['spread_queues']} queues, "
            f"every process serving all | {fmt(many)} | {ratio(many, one)} |",
        ]
    if huge and base:
        cost = base / huge
        lines += [
            f"| Drain {s['jobs']:,}, {s['history_small']:,} finished jobs in the table | {fmt(base)} | 1.00x |",
            f"| Drain {s['jobs']:,}, {s['history_huge']:,} finished jobs in the table (retention off; "
            f"`BENCH_SCALE=1`) | {fmt(huge)} | "
            f"{ratio(huge, base)} ({cost - 1:+.0%} cost per job) |",
        ]
    missing = []
    if not med(results, "deep", "jobstead"):
        missing.append(f"the deep queue ({s.get('deep_jobs', 1_000_000):,} jobs)")
    if not huge:
        missing.append(f"the long history ({s.get('history_huge', 10_000_000):,} finished jobs)")
    if missing and "parts" not in results:
        lines += [
            "",
            f"Not in this run: {' and '.join(missing)}; `BENCH_SCALE=1 make bench` adds them, "
            "`python -m bench.scale` runs them alone (latest in `bench/results/scale.md`).",
        ]
    return lines


def render_scale(results: dict[str, Any]) -> str:
    """``python -m bench.scale``'s report: the machine, the scale rows and their verdicts."""
    m = results["machine"]
    pg = m["postgres"]
    versions = ", ".join(f"{p} {v}" for p, v in results.get("versions", {}).items())
    lines = [
        f"Measured {m['date']} on {m['nproc']} cores ({m['cpu']}), {m['memory_gib']:.0f} GiB; PostgreSQL "
        f"{pg['server_version']} (fsync={pg['fsync']}, synchronous_commit={pg['synchronous_commit']}, "
        f"shared_buffers={pg['shared_buffers']}); Python {m['python']}{'; ' + versions if versions else ''}. "
        f"Parts: {', '.join(results['parts'])}; {m['minutes']} min"
        + (f" in {len(m['pieces'])} pieces run one after another" if m.get("pieces") else "")
        + ". Other work on the machine took "
        f"{m['others_cpu']:.0%} of all cores over the run ({m['others_cpu_peak']:.0%} at its busiest); "
        f"load average {m['load_start']:.2f} at the start.",
    ]
    lines += scale_lines(results)
    verdicts = scale_targets(results)
    if verdicts:
        lines += ["", "| Target (issue 19) | Measured | Verdict |", "|---|--:|---|"]
        lines += [f"| {t.text} | {t.measured} | {'met' if t.met else 'missed: ' + t.shortfall} |" for t in verdicts]
    return "\n".join(lines)


def merge_scale(pieces: list[dict[str, Any]]) -> dict[str, Any]:
    """Several ``bench.scale`` runs as one (pieces of one measurement, each short enough for the machine lock).

    Figures and runs are pooled (a median over every piece's runs); the machine is the
    first piece's, with the minutes added up and other work's share the worst piece's.
    """
    first = pieces[0]
    merged: dict[str, Any] = {
        "machine": {
            **first["machine"],
            "minutes": round(sum(p["machine"]["minutes"] for p in pieces), 1),
            "others_cpu": max(p["machine"]["others_cpu"] for p in pieces),
            "others_cpu_peak": max(p["machine"]["others_cpu_peak"] for p in pieces),
            "pieces": [p["machine"]["date"] for p in pieces],
        },
        "versions": {k: v for p in pieces for k, v in p.get("versions", {}).items()},
        "settings": first["settings"],
        "parts": [part for part in ("deep", "spread", "history") if any(part in p["parts"] for p in pieces)],
        "figures": {},
        "runs": {},
    }
    for p in pieces:
        for metric, by_system in p["figures"].items():
            for system, values in by_system.items():
                merged["figures"].setdefault(metric, {}).setdefault(system, []).extend(values)
        for metric, by_system in p["runs"].items():
            for system, runs in by_system.items():
                merged["runs"].setdefault(metric, {}).setdefault(system, []).extend(runs)
    return merged


def write_scale(results: dict[str, Any], stem: str = "scale") -> Path:
    """Raw run to ``results/STEM-*.json``; the report to ``results/scale.md`` (``scale-quick.md`` when quick)."""
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.strptime(results["machine"]["date"], "%Y-%m-%d %H:%M UTC").strftime("%Y%m%dT%H%MZ")
    raw = RESULTS / f"{stem}-{stamp}.json"
    raw.write_text(json.dumps(results, indent=2))
    quick = results["settings"]["quick"]
    title = "# Scale rows (`python -m bench.scale`)" + (": smoke run (BENCH_QUICK), not comparable" if quick else "")
    (RESULTS / ("scale-quick.md" if quick else "scale.md")).write_text(f"{title}\n\n{render_scale(results)}\n")
    return raw


def render(results: dict[str, Any], *, summary: bool = False) -> str:
    """The report as Markdown; ``summary`` leaves out the method notes (for the README)."""
    m, s, v = results["machine"], results["settings"], results["versions"]
    pg = m["postgres"]
    n = s["jobs"]
    procs = s["processes"]
    others, peak = m["others_cpu"], m["others_cpu_peak"]
    quiet = others < 0.05 and peak < 0.25
    busy = "a quiet machine" if quiet else "the machine was busy with other work too, so the figures are noisy"
    lines = [
        f"Measured {m['date']} on {m['nproc']} cores ({m['cpu']}), {m['memory_gib']:.0f} GiB, Linux {m['kernel']}; "
        f"PostgreSQL {pg['server_version']} (fsync={pg['fsync']}, synchronous_commit={pg['synchronous_commit']}, "
        f"shared_buffers={pg['shared_buffers']}); Python {m['python']}; "
        + ", ".join(f"{p} {v[p]}" for p in peers_of(results))
        + f". Each figure is the median of {s['reps']} runs; "
        f"whole run {m['minutes']} min. Other work on the machine (CPU not used by the benchmark's own "
        f"processes) took {others:.0%} of all cores over the run, {peak:.0%} at its busiest between two "
        f"progress lines; load average {m['load_start']:.2f} at the start: {busy}.",
        "",
        "| Measure | Jobstead | " + "".join(f"{p} | " for p in peers_of(results)) + "best peer | Jobstead/best peer |",
        "|---|--:|" + "--:|" * len(peers_of(results)) + "---|--:|",
    ]
    rows = [
        ("drain_1", f"Drain {n:,} no-op jobs, 1 process (jobs/s)", ""),
        ("drain_4", f"Drain {n:,} no-op jobs, {procs} processes (jobs/s)", ""),
        ("enqueue_single", "Defer, one job per transaction (jobs/s)", ""),
        ("enqueue_bulk", f"Bulk defer of {n:,} (jobs/s)", ""),
        ("latency_p50", f"Defer-to-start p50 at {s['latency_rate']:.0f} jobs/s (ms)", "ms"),
        ("latency_p95", "Defer-to-start p95 (ms)", "ms"),
        ("latency_p99", "Defer-to-start p99 (ms)", "ms"),
    ]
    any_capped = False
    for metric, label, unit in rows:
        cells = []
        for system in ("jobstead", *peers_of(results)):
            cell = fmt(med(results, metric, system), unit)
            if metric.startswith("drain") and capped(results, metric, system):
                cell += " †"
                any_capped = True
            cells.append(cell)
        j = med(results, metric, "jobstead")
        lower = unit == "ms"
        peer, best = best_peer(results, metric, lower=lower)
        # the ratio always reads "higher is better for Jobstead"
        versus = ratio(best, j) if lower else ratio(j, best)
        lines.append(f"| {label} | {' | '.join(cells)} | {peer or 'n/a'} | {versus} |")
    small, large = med(results, "history_small", "jobstead"), med(results, "history_large", "jobstead")
    limited, free = med(results, "limited", "jobstead"), med(results, "drain_4", "jobstead")

    def jobstead_only(metric: str) -> str:
        nonlocal any_capped
        cell = fmt(med(results, metric, "jobstead"))
        if capped(results, metric, "jobstead"):
            any_capped = True
            return cell + " †"
        return cell

    lines += steady_table(results)
    c1, c4 = med(results, "pgbench_1", "postgres"), med(results, f"pgbench_{procs}", "postgres")
    lines += [
        "",
        "| Jobstead only | jobs/s | relative |",
        "|---|--:|--:|",
        f"| Drain {n:,}, {procs} processes, {s['history_small']:,} finished jobs in the table | "
        f"{jobstead_only('history_small')} | 1.00x |",
        f"| Drain {n:,}, {procs} processes, {s['history_large']:,} finished jobs in the table | "
        f"{jobstead_only('history_large')} | "
        f"{ratio(large, small)} |",
        f"| Drain {n:,}, {procs} processes, no concurrency limit (row 2 above) | {fmt(free)} | 1.00x |",
        f"| Drain {n:,}, {procs} processes, global concurrency limit {s['limit']} | {jobstead_only('limited')} | "
        f"{ratio(limited, free)} |",
    ]
    plain, pooler = med(results, "plain", "jobstead"), med(results, "pooler", "jobstead")
    if plain and pooler:
        lines += [
            f"| Drain {n:,}, {procs} processes, prepared statements (default), run beside the next row | "
            f"{jobstead_only('plain')} | 1.00x |",
            f"| Drain {n:,}, {procs} processes, pooler mode (`?prepare_threshold=none`, as PgBouncer needs) | "
            f"{jobstead_only('pooler')} | {ratio(pooler, plain)} |",
        ]
    lines += scale_lines(results)
    if "flow" in results["runs"]:
        lines += flow.render(results["runs"]["flow"], n, procs)
    if "workflows" in results["runs"]:
        lines += workflows.render(results["runs"]["workflows"])
    lines += [
        "",
        "Jobstead/best peer reads higher-is-better on every row: for the delays it is the best peer's "
        "delay over Jobstead's.",
    ]
    if any_capped:
        lines += [
            "",
            f"† slower than {n:,} jobs in {s['drain_cap']:g} s: measured on the jobs finished in the first "
            f"{s['drain_cap']:g} s of the drain (keeps `make bench` under 20 minutes).",
        ]
    lines += [
        "",
        "| The database's limit: pgbench, one-row INSERT per transaction | commits/s | Jobstead drain as share |",
        "|---|--:|--:|",
        f"| 1 client | {fmt(c1)} | {ratio(med(results, 'drain_1', 'jobstead'), c1)} |",
        f"| {procs} clients | {fmt(c4)} | {ratio(free, c4)} |",
    ]
    lines += mariadb_lines(results)
    if summary:  # the README shows what a user compares; the project's own targets stay in latest.md
        return "\n".join(lines)
    lines += ["", "| Target (issue 7) | Measured | Verdict |", "|---|--:|---|"]
    for t in targets(results):
        lines.append(f"| {t.text} | {t.measured} | {'met' if t.met else 'missed: ' + t.shortfall} |")
    lines += ["", "| Target (issue 19) | Measured | Verdict |", "|---|--:|---|"]
    for t in targets_19(results):
        lines.append(f"| {t.text} | {t.measured} | {'met' if t.met else 'missed: ' + t.shortfall} |")
    config = results["configuration"]
    lines += ["", "How each system was configured (details and sources in `bench/README.md`):", ""]
    lines += [f"- **{name}**: {text}" for name, text in config.items()]
    if ANALYSIS.exists():
        lines += ["", "## Closing note", "", ANALYSIS.read_text().strip()]
    return "\n".join(lines)


def is_partial(results: dict[str, Any]) -> bool:
    """A run of only some systems (``BENCH_SYSTEMS``): never the published table."""
    return set(results["settings"].get("systems", ("jobstead", *PEERS))) != {"jobstead", *PEERS}


def write(results: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.strptime(results["machine"]["date"], "%Y-%m-%d %H:%M UTC").strftime("%Y%m%dT%H%MZ")
    raw = RESULTS / f"run-{stamp}.json"
    raw.write_text(json.dumps(results, indent=2))
    if results["settings"]["quick"]:
        (RESULTS / "quick.md").write_text("# Smoke run (BENCH_QUICK): not comparable figures\n\n" + render(results))
        return raw
    if is_partial(results):
        systems = ", ".join(results["settings"]["systems"])
        (RESULTS / "partial.md").write_text(f"# Partial run (BENCH_SYSTEMS={systems})\n\n" + render(results) + "\n")
        return raw
    publish(results)
    return raw


def publish(results: dict[str, Any]) -> None:
    """The committed report and the README's table."""
    (RESULTS / "latest.md").write_text("# Jobstead benchmark: latest run (`make bench`)\n\n" + render(results) + "\n")
    update_readme(render(results, summary=True))


def update_readme(table: str) -> None:
    """Replace what lies between the README's markers; leave the README alone without them."""
    if not README.exists():
        return
    text = README.read_text()
    if START not in text or END not in text:
        print(f"README.md has no {START} ... {END} markers: not updated")
        return
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{table}\n{END}{tail}")


def main() -> None:
    """``python -m bench.report RUN.json``: render a saved run again (after editing analysis.md)."""
    import sys

    results = json.loads(Path(sys.argv[1]).read_text())
    print(render(results))
    if not results["settings"]["quick"]:
        (RESULTS / "latest.md").write_text(
            "# Jobstead benchmark: latest run (`make bench`)\n\n" + render(results) + "\n"
        )
        update_readme(render(results, summary=True))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Merges the `xtcp load --json` reports of one scripts/bench.sh run into one JSON file, prints the table with
xtcp/kernel ratios, checks the ratio floors (--check-floors, for --quick) and, with --plots DIR, writes
results.json and the Markdown table (results.md) into DIR.

Python's standard library only. The plots are drawn from DIR/results.json by bench/plot.rs (plotters), which
scripts/bench.sh runs after this: `cargo run --release --locked --example plot -- DIR/results.json DIR`.
"""

import argparse
import json
import os
import platform
import sys
import time

STACKS = (("xdp", "xtcp"), ("kernel", "kernel"))

# Workload key → (title, unit of its rate).
TITLES = {
    "echo-1": "echo 64 B, 1 connection",
    "echo-16": "echo 64 B, 16 connections",
    "echo-64": "echo 64 B, 64 connections",
    "echo-1024": "echo 64 B, 1024 connections",
    "block-1": "echo 64 B, 1 conn., both ends sleep when idle",
    "cps": "new connection per request (64 B answer)",
    "http-16": "HTTP keep-alive, 600 B body, 16 connections",
    "http-64": "HTTP keep-alive, 600 B body, 64 connections",
    "bulk": "bulk: 1 conn., 1 GiB one way",
    "bulk-echo": "bulk: 1 conn., 1 MiB echoed (each way)",
    "wrk-16": "HTTP 600 B, 16 conn., wrk: xtcp http / nginx",
    "http-16-nginx": "HTTP 16 conn.: xtcp http+load / nginx+wrk",
    "raw-1": "AF_XDP alone, no TCP: 1 frame in flight",
    "raw-64": "AF_XDP alone, no TCP: 64 frames in flight",
    "raw-stream-64": "AF_XDP alone, no TCP: streaming 64-byte frames",
    "raw-stream-1514": "AF_XDP alone, no TCP: streaming 1514-byte frames",
    "hold-100k": "echo 64 B, 64 conn., 100k more held idle",
    "hold-1m": "echo 64 B, 64 conn., 1M more held idle",
    "idle": "a server with no traffic, share of one core",
}


def title_of(key):
    """A workload's title: its own, or one made for an echo-N, block-N or http-N the table does not list."""
    if key in TITLES:
        return TITLES[key]
    kind, _, n = key.partition("-")
    made = {
        "echo": f"echo 64 B, {n} connections",
        "block": f"echo 64 B, {n} conn., both ends sleep when idle",
        "http": f"HTTP keep-alive, 600 B body, {n} connections",
        "poll": f"echo 64 B, {n} conn., adaptive / busy-polling",
    }
    return made.get(kind, key) if n.isdigit() else key


def is_hold(key):
    """`xtcp load --hold` runs: their reports carry a memory reading (`memory`)."""
    return key.startswith("hold-")


def mem_ratio(mx, mk):
    """The kernel's bytes per connection over xtcp's."""
    return mk["bytes_per_conn"] / max(mx["bytes_per_conn"], 1)


def memory(m, held, hold_open_us):
    """Bytes per held connection from a hold run's .mem readings (KiB): the server's RSS growth, plus half the
    slab's (the kernel's sockets of both ends live in this one kernel; xtcp's hardly touch it)."""
    if m.get("tcp_inuse_peak", 0) > 0:
        # Kernel sockets, perhaps held by several processes: count them in the server's namespace.
        held = max(m["tcp_inuse_peak"] - m["not_held_sockets"], 0)
    if not held:
        return None
    rss = max(m["server_rss_kib"] - m["server_rss_before_kib"], 0) * 1024
    slab = max(m["slab_kib"] - m["slab_before_kib"], 0) * 1024
    return {
        "held": held,
        "server_rss_bytes_per_conn": round(rss / held),
        "slab_bytes_per_conn_per_end": round(slab / 2 / held),
        "bytes_per_conn": round((rss + slab / 2) / held),
        "load_rss_kib": m["load_rss_kib"],
        "extra_process_pairs": m.get("extra_pairs", 0),
        # The extra pairs open their share before the main load opens its own.
        "open_s": round(m.get("extra_open_s", 0) + hold_open_us / 1e6, 1),
    }


def is_poll(key):
    """Adaptive polling against pure busy-polling, xtcp at both ends: reports KEY-xdp (the default, adaptive loop)
    and KEY-busy (never sleeps)."""
    return key.startswith("poll-")


def is_idle(key):
    """A server with no traffic: reports {"idle_cpu_percent"} for each stack."""
    return key == "idle"


def is_special(key):
    """Workloads outside the xtcp/kernel rate table."""
    return is_raw(key) or is_poll(key) or is_idle(key)


def poll_ratio(r):
    """Adaptive polling's p50 latency over busy-polling's, or None."""
    a, b = r.get("xdp"), r.get("busy")
    if not a or not b:
        return None
    return a["latency"]["p50_us"] / max(b["latency"]["p50_us"], 1)


def is_raw(key):
    """The null reflector's runs (`xtcp reflect`): xtcp's AF_XDP path only, no kernel counterpart."""
    return key.startswith("raw-")

# The floors --quick asserts: xtcp's median rate over the kernel's, measured in the same run. Set from this
# machine's runs (2 CPUs, at times shared with compilers, load average 0.3-6; docs/benchmarks.md) at about half of
# the lowest median seen since 2026-12-07 — echo-1 1.63-1.88, echo-64 2.93-3.61, cps 6.24-7.12 (the cps runs were
# bistable, 0.6-3.7, before ephemeral ports walked their range in turn); on the faster host of the 2026-12-07
# evening, whose kernel does 1.3-1.7 times as much, echo-1 1.65-1.77, echo-64 2.40-3.00, cps 4.17-4.30 — so a
# loaded CI machine passes and only a real regression fails. Raise them as xtcp gets faster.
FLOORS = {"echo-1": 0.8, "echo-64": 1.2, "cps": 2.2}


# Bytes per request of the bulk workloads (scripts/bench.sh).
BULK_BYTES = {"bulk": 1 << 30, "bulk-echo": 1 << 20}


def is_bulk(key):
    return key in BULK_BYTES


def rate(key, report):
    """The workload's headline number: Gbit/s (one way for bulk, each way for bulk-echo), requests (= transactions,
    connections) per second otherwise."""
    if is_bulk(key):
        sent = report["completed"] * BULK_BYTES[key] * 8
        return sent / report["elapsed_us"] / 1e3 if report["elapsed_us"] else 0.0
    return report["requests_per_sec"]


def unit(key):
    return "Gbit/s" if is_bulk(key) else ("conn./s" if key == "cps" else "trans./s")


def machine(args):
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "load_average_before": args.load_before,
        "load_average_after": args.load_after,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def read(args, key, stack, rep):
    path = os.path.join(args.work, f"{key}-{stack}-{rep}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        r = json.load(f)
    r.pop("latency_buckets", None)
    # The cache-line round trip between the two CPUs just before the run and just after it (scripts/bench.sh,
    # bench/cacheline.c).
    for suffix, field in ((".cacheline", "cacheline_ns"), (".cacheline-after", "cacheline_after_ns")):
        try:
            with open(os.path.join(args.work, f"{key}-{stack}-{rep}{suffix}")) as f:
                r[field] = int(f.read().strip())
        except (OSError, ValueError):
            pass
    mem = os.path.join(args.work, f"{key}-{stack}-{rep}.mem")
    if is_hold(key) and os.path.exists(mem):
        with open(mem) as f:
            r["memory"] = memory(json.load(f), r.get("held", 0), r.get("hold_open_us", 0))
    return r


def middle(ordered):
    """The median of a sorted, non-empty list (the lower one of an even count)."""
    return ordered[(len(ordered) - 1) // 2]


def load(args):
    """Per workload, the repetition with the median xtcp/kernel ratio (both stacks from the same repetition), and
    every repetition's ratio; for the reflector, the repetition with the median rate."""
    runs = {}
    for key in args.workloads.split():
        if is_poll(key):
            reps = [{s: read(args, key, s, i) for s in ("xdp", "busy")} for i in range(1, args.repeats + 1)]
            pairs = sorted((p for p in reps if p["xdp"] and p["busy"]), key=poll_ratio)
            runs[key] = dict(middle(pairs)) if pairs else {}
            if pairs:
                runs[key]["repeat_ratios"] = [round(poll_ratio(p), 3) for p in pairs]
            continue
        if is_idle(key):
            reps = [{s: read(args, key, s, i) for s, _ in STACKS} for i in range(1, args.repeats + 1)]
            runs[key] = {}
            for s, _ in STACKS:
                got = sorted((p[s] for p in reps if p[s]), key=lambda x: x["idle_cpu_percent"])
                if got:
                    runs[key][s] = middle(got)
            continue
        reps = [{s: read(args, key, s, i) for s, _ in STACKS} for i in range(1, args.repeats + 1)]
        pairs = [p for p in reps if p["xdp"] and p["kernel"]]
        if pairs:
            pairs.sort(key=lambda p: ratio_of(key, p) or 0.0)
            runs[key] = dict(middle(pairs))
            runs[key]["repeat_ratios"] = [round(ratio_of(key, p) or 0.0, 3) for p in pairs]
            continue
        alone = sorted((p["xdp"] for p in reps if p["xdp"]), key=lambda x: x.get("frames_per_sec", 0.0))
        runs[key] = {"xdp": middle(alone)} if alone else {}
    # Each stack's best HTTP pair side by side, from two workloads: xtcp http loaded by xtcp load (http-16, xtcp at
    # both ends) against nginx loaded by wrk (wrk-16's kernel run, the kernel at both ends).
    xtcp_http, nginx = runs.get("http-16", {}).get("xdp"), runs.get("wrk-16", {}).get("kernel")
    if xtcp_http and nginx:
        runs["http-16-nginx"] = {"xdp": xtcp_http, "kernel": nginx}
    return runs


def cacheline(x):
    """A run's cache-line readings: before, or before→after when the run has both."""
    if "cacheline_ns" not in x:
        return None
    after = x.get("cacheline_after_ns")
    return f"{x['cacheline_ns']}→{after}" if after is not None else str(x["cacheline_ns"])


def table(runs):
    lines = []
    head = f"{'workload':<46} {'stack':<7} {'rate':>14} {'unit':<8} {'p50 µs':>7} {'p99 µs':>7} {'p99.9':>7} {'errors':>6}"
    lines.append(head)
    lines.append("-" * len(head))
    for key, r in runs.items():
        if is_special(key):
            continue
        for i, (stack, label) in enumerate(STACKS):
            title = title_of(key) if i == 0 else ""
            x = r.get(stack)
            if x is None:
                lines.append(f"{title:<46} {label:<7} {'failed':>14}")
                continue
            v = rate(key, x)
            shown = f"{v:,.2f}" if is_bulk(key) else f"{v:,.0f}"
            lat = x["latency"]
            errors = x["errors"] if isinstance(x["errors"], int) else sum(x["errors"].values())
            lines.append(
                f"{title:<46} {label:<7} {shown:>14} {unit(key):<8} {lat['p50_us']:>7} {lat['p99_us']:>7} "
                f"{lat['p999_us']:>7} {errors:>6}"
            )
        ratio = ratio_of(key, r)
        spread = r.get("repeat_ratios", [])
        spread = f"  (runs: {', '.join(f'{x:.2f}' for x in spread)})" if len(spread) > 1 else ""
        cl = [cacheline(r.get(s, {})) for s, _ in STACKS]
        if all(c is not None for c in cl):
            spread += f"  cache line {cl[0]} / {cl[1]} ns"
        lines.append(f"{'':<46} {'ratio':<7} {ratio:>13.2f}x{spread}" if ratio is not None else f"{'':<46} ratio   n/a")
    held = [k for k in runs if is_hold(k)]
    if held:
        lines.append("")
        lines.append(f"{'connections held':<46} {'stack':<7} {'held':>10} {'open s':>7} {'bytes/conn.':>12} "
                     f"{'RSS':>7} {'slab':>7}")
        for k in held:
            for i, (stack, label) in enumerate(STACKS):
                title = title_of(k) if i == 0 else ""
                x = runs[k].get(stack)
                m = x and x.get("memory")
                if not m:
                    lines.append(f"{title:<46} {label:<7} {'failed':>10}")
                    continue
                lines.append(
                    f"{title:<46} {label:<7} {m['held']:>10,} {m['open_s']:>7.1f} "
                    f"{m['bytes_per_conn']:>12,} {m['server_rss_bytes_per_conn']:>7,} {m['slab_bytes_per_conn_per_end']:>7,}"
                )
            mx, mk = (runs[k].get(s, {}).get("memory") for s, _ in STACKS)
            if mx and mk:
                lines.append(f"{'':<46} {'kernel / xtcp':<26} {mem_ratio(mx, mk):>12.2f}x")
    polls = [k for k in runs if is_poll(k) or is_idle(k)]
    if polls:
        lines.append("")
        lines.append(f"{'adaptive polling (xtcp on both ends)':<46} {'loop':<9} {'rate':>12} {'unit':<8} {'p50 µs':>7} "
                     f"{'p99 µs':>7} {'p99.9':>7}")
        for k in polls:
            r = runs[k]
            if is_idle(k):
                shown = "  ".join(f"{label} {r[s]['idle_cpu_percent']:.1f}%" if s in r else f"{label} failed"
                                  for s, label in STACKS)
                lines.append(f"{title_of(k):<46} {shown}")
                continue
            for i, (s, label) in enumerate((("xdp", "adaptive"), ("busy", "busy"))):
                title = title_of(k) if i == 0 else ""
                x = r.get(s)
                if x is None:
                    lines.append(f"{title:<46} {label:<9} {'failed':>12}")
                    continue
                lat = x["latency"]
                lines.append(f"{title:<46} {label:<9} {x['requests_per_sec']:>12,.0f} {'trans./s':<8} "
                             f"{lat['p50_us']:>7} {lat['p99_us']:>7} {lat['p999_us']:>7}")
            ratio = poll_ratio(r)
            if ratio is not None:
                lines.append(f"{'':<46} {'p50 adaptive / busy':<22} {ratio:>8.2f}x")
    raw = [k for k in runs if is_raw(k)]
    if raw:
        lines.append("")
        lines.append(f"{'the AF_XDP ceiling (xtcp reflect)':<46} {'':<7} {'frames/s':>14} {'':<8} {'p50 µs':>7} {'p99 µs':>7} {'lost':>7}")
        for k in raw:
            x = runs[k].get("xdp")
            if x is None:
                lines.append(f"{title_of(k):<46} {'':<7} {'failed':>14}")
                continue
            if "p50_us" not in x:
                # Streaming: frames/s that arrived, and the frames' Gbit/s.
                lost = max(x["sent"] - x["frames"], 0)
                lines.append(
                    f"{title_of(k):<46} {'':<7} {x['frames_per_sec']:>14,.0f} {x['gbit_per_sec']:>5.2f} Gb "
                    f"{'—':>7} {'—':>7} {lost:>7}"
                )
                continue
            cl = f"  cache line {cacheline(x)} ns" if "cacheline_ns" in x else ""
            lines.append(
                f"{title_of(k):<46} {'':<7} {x['frames_per_sec']:>14,.0f} {'':<8} {x['p50_us']:>7} "
                f"{x['p99_us']:>7} {x['lost']:>7}{cl}"
            )
    return "\n".join(lines)


def markdown(runs):
    """The table as Markdown, for docs/benchmarks.md."""
    # The cache-line round trips read before and after each run (bench/cacheline.c): a reading near 55 ns or near
    # 330 ns tells which placement of the VM's two vCPUs the run had (docs/benchmarks.md, "The machine's two speeds").
    def readings(*xs):
        shown = [cacheline(x) for x in xs]
        return " / ".join(shown) if all(shown) else "—"

    out = ["| workload | xtcp | kernel | xtcp / kernel | p50 µs xtcp / kernel | p99 µs xtcp / kernel "
           "| cache line ns, before→after, xtcp / kernel |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, r in runs.items():
        if is_special(key) or "xdp" not in r or "kernel" not in r:
            continue
        x, k = r["xdp"], r["kernel"]
        show = (lambda v: f"{v:.2f} {unit(key)}") if is_bulk(key) else (lambda v: f"{v:,.0f} {unit(key)}")
        out.append(
            f"| {title_of(key)} | {show(rate(key, x))} | {show(rate(key, k))} | **{ratio_of(key, r):.2f}×** | "
            f"{x['latency']['p50_us']} / {k['latency']['p50_us']} | {x['latency']['p99_us']} / {k['latency']['p99_us']} | "
            f"{readings(x, k)} |"
        )
    held = [k for k in runs if is_hold(k) and all(runs[k].get(s, {}).get("memory") for s, _ in STACKS)]
    if held:
        out += ["", "| connections held | held | opened in, s (xtcp / kernel) | bytes per connection, xtcp | "
                "kernel (RSS + slab / 2) | kernel / xtcp |", "| --- | --- | --- | --- | --- | --- |"]
        for k in held:
            x, kn = runs[k]["xdp"], runs[k]["kernel"]
            mx, mk = x["memory"], kn["memory"]
            out.append(
                f"| {title_of(k)} | {mx['held']:,} / {mk['held']:,} | {mx['open_s']:.1f} / {mk['open_s']:.1f} | "
                f"{mx['bytes_per_conn']:,} | {mk['bytes_per_conn']:,} "
                f"({mk['server_rss_bytes_per_conn']:,} + {mk['slab_bytes_per_conn_per_end']:,}) | "
                f"{mem_ratio(mx, mk):.1f}× |"
            )
    polls = [k for k in runs if is_poll(k) and poll_ratio(runs[k]) is not None]
    if polls:
        out += ["", "| adaptive polling, xtcp on both ends | adaptive (default) | busy-polling | p50 µs adaptive / busy "
                "| p99 µs adaptive / busy | p50 adaptive / busy |", "| --- | --- | --- | --- | --- | --- |"]
        for k in polls:
            a, b = runs[k]["xdp"], runs[k]["busy"]
            out.append(
                f"| {title_of(k)} | {a['requests_per_sec']:,.0f} trans./s | {b['requests_per_sec']:,.0f} trans./s | "
                f"{a['latency']['p50_us']} / {b['latency']['p50_us']} | {a['latency']['p99_us']} / "
                f"{b['latency']['p99_us']} | **{poll_ratio(runs[k]):.2f}×** |"
            )
    idle = runs.get("idle", {})
    if all(s in idle for s, _ in STACKS):
        out += ["", "| a server with no traffic | xtcp | kernel |", "| --- | --- | --- |",
                f"| share of one core | {idle['xdp']['idle_cpu_percent']:.1f}% | {idle['kernel']['idle_cpu_percent']:.1f}% |"]
    raw = [k for k in runs if is_raw(k) and "xdp" in runs[k]]
    if raw:
        out += ["", "| AF_XDP alone (`xtcp reflect`, no TCP) | frames/s | p50 µs | p99 µs | cache line ns, before→after |",
                "| --- | --- | --- | --- | --- |"]
        for k in raw:
            x = runs[k]["xdp"]
            if "p50_us" not in x:
                out.append(
                    f"| {title_of(k)} | {x['frames_per_sec']:,.0f} ({x['gbit_per_sec']:.2f} Gbit/s) | — | — | "
                    f"{readings(x)} |"
                )
                continue
            out.append(f"| {title_of(k)} | {x['frames_per_sec']:,.0f} | {x['p50_us']} | {x['p99_us']} | {readings(x)} |")
    return "\n".join(out) + "\n"


def ratio_of(key, r):
    if is_special(key) or "xdp" not in r or "kernel" not in r:
        return None
    k = rate(key, r["kernel"])
    return rate(key, r["xdp"]) / k if k else None


def write(outdir, name, text):
    path = os.path.join(outdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def wrk_report(path):
    """wrk's text output (with --latency) as the fields of an `xtcp load --json` report that the table uses.
    wrk prints no p99.9: its p99 stands in."""
    text = open(path).read()
    scale = {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}

    def micros(v):
        for u in ("us", "ms", "m", "s"):
            if v.endswith(u):
                return round(float(v[: -len(u)]) * scale[u])
        return round(float(v) * 1e6)

    pct, rps, done, secs, errors = {}, 0.0, 0, 0.0, 0
    for line in text.splitlines():
        f = line.split()
        if len(f) == 2 and f[0] in ("50%", "90%", "99%"):
            pct[f[0]] = micros(f[1])
        elif line.startswith("Requests/sec:"):
            rps = float(f[1])
        elif len(f) >= 5 and f[1] == "requests" and f[2] == "in":
            done, secs = int(f[0]), float(f[3].rstrip(",s"))
        elif line.strip().startswith("Socket errors:"):
            errors += sum(int(x.rstrip(",")) for x in f[2:] if x.rstrip(",").isdigit())
        elif line.strip().startswith("Non-2xx"):
            errors += int(f[-1])
    if not rps:
        raise SystemExit(f"no Requests/sec in {path}")
    lat = {"p50_us": pct.get("50%", 0), "p90_us": pct.get("90%", 0), "p99_us": pct.get("99%", 0)}
    lat["p999_us"] = lat["p99_us"]
    return {"completed": done, "elapsed_us": round(secs * 1e6), "requests_per_sec": rps, "errors": errors,
            "failed": errors, "latency": lat, "client": "wrk"}


# The soak fails when a process's resident memory at the end is more than this over its reading after the first
# minute (the tables are allocated up front and buffers come and go, so a flat line is expected), in KiB and
# as a fraction, whichever is larger.
SOAK_RSS_SLACK_KIB = 2048
SOAK_RSS_SLACK_FRACTION = 0.05


def soak(samples_path, report_path):
    """Prints the soak's samples once a minute and its verdict; returns the exit status."""
    with open(samples_path) as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    head, rows = rows[0], [list(map(int, r)) for r in rows[1:] if r and r[0]]
    with open(report_path) as f:
        report = json.load(f)
    errors = report["errors"] if isinstance(report["errors"], int) else sum(report["errors"].values())
    print(f"\n{'t s':>6} {'server RSS KiB':>15} {'load RSS KiB':>13} {'TIME_WAIT':>10} {'conns opened':>13} "
          f"{'buffer bytes':>13}")
    for r in rows:
        if r[0] % 60 == 0 or r is rows[-1]:
            print(f"{r[0]:>6} {r[1]:>15} {r[2]:>13} {r[3]:>10} {r[4]:>13} {r[5]:>13}")
    secs = report["elapsed_us"] / 1e6
    opened = report.get("connections_opened", 0)
    print(f"\n{report['completed']} requests, {opened} connections in {secs:.0f} s "
          f"({opened / max(secs, 1e-9):,.0f} conn./s); errors {errors}")
    bad = []
    if errors:
        bad.append(f"{errors} load errors (a port, the table or TIME_WAIT ran out?) — see the load report")
    base = next((r for r in rows if r[0] >= 60), None)
    if base and rows:
        for i, who in ((1, "server"), (2, "load generator")):
            grew = rows[-1][i] - base[i]
            slack = max(SOAK_RSS_SLACK_KIB, base[i] * SOAK_RSS_SLACK_FRACTION)
            print(f"{who} RSS: {base[i]} KiB at {base[0]} s, {rows[-1][i]} KiB at {rows[-1][0]} s ({grew:+} KiB)")
            if grew > slack:
                bad.append(f"{who} memory grew by {grew} KiB after the first minute")
    summary = {"samples": [dict(zip(head, r)) for r in rows], "report": report, "failures": bad}
    with open(os.path.join(os.path.dirname(samples_path), "soak.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if bad:
        print("error: " + "; ".join(bad), file=sys.stderr)
        return 1
    print("soak: no errors, memory flat")
    return 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--wrk":
        print(json.dumps(wrk_report(sys.argv[2]), indent=2))
        return 0
    if len(sys.argv) == 5 and sys.argv[1] == "--soak" and sys.argv[3] == "--soak-report":
        return soak(sys.argv[2], sys.argv[4])
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", required=True, help="the directory holding KEY-STACK.json reports")
    p.add_argument("--workloads", required=True)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--secs", type=float, required=True)
    p.add_argument("--server-cpu", type=int, default=1)
    p.add_argument("--client-cpu", type=int, default=0)
    p.add_argument("--load-before", default="")
    p.add_argument("--load-after", default="")
    p.add_argument("--out", required=True, help="the merged JSON file")
    p.add_argument("--plots", help="also write results.json and results.md in this directory (for bench/plot.rs)")
    p.add_argument("--check-floors", action="store_true", help="exit 1 when an xtcp/kernel ratio is under its floor")
    args = p.parse_args()

    runs = load(args)
    meta = machine(args)
    result = {
        "machine": meta,
        "seconds_per_run": args.secs,
        "repeats": args.repeats,
        "pinning": {"server_cpu": args.server_cpu, "load_cpu": args.client_cpu},
        "workloads": {k: title_of(k) for k in runs},
        "ratios": {k: ratio_of(k, r) for k, r in runs.items() if not is_special(k)},
        "adaptive_poll": {
            "p50_adaptive_over_busy": {k: poll_ratio(r) for k, r in runs.items() if is_poll(k)},
            "idle_cpu_percent": {s: runs["idle"][s]["idle_cpu_percent"] for s, _ in STACKS if s in runs.get("idle", {})},
        },
        "runs": runs,
    }
    text = json.dumps(result, indent=2) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print()
    print(table(runs))
    print(f"\nload average {meta['load_average_before']} before, {meta['load_average_after']} after; "
          f"server on CPU {args.server_cpu}, load on CPU {args.client_cpu}; results in {args.out}")
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
        write(args.plots, "results.json", text)
        print(f"table: {write(args.plots, 'results.md', markdown(runs))}")

    def wanted(k):
        return ("xdp",) if is_raw(k) else ("xdp", "busy") if is_poll(k) else tuple(s for s, _ in STACKS)

    missing = [f"{k} ({s})" for k, r in runs.items() for s in wanted(k) if s not in r]
    if args.check_floors:
        bad = []
        for k, floor in FLOORS.items():
            if k not in runs:
                continue
            ratio = ratio_of(k, runs[k])
            if ratio is None or ratio < floor:
                bad.append(f"{k}: xtcp/kernel {'n/a' if ratio is None else f'{ratio:.2f}'} under the floor {floor}")
        if bad:
            print("error: " + "; ".join(bad), file=sys.stderr)
            return 1
        print("ratio floors: " + ", ".join(f"{k} ≥ {f}" for k, f in FLOORS.items() if k in runs) + " — all met")
    if missing:
        print("error: runs failed: " + ", ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

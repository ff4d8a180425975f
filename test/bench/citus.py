#!/usr/bin/python3
"""Measurement half of test/bench/citus.sh (which starts the Citus cluster,
loads the distributed table t and switches spillagg versions).

  citus.py measure VERSION   runs every query with the spillagg version now
                             installed (0.1 or 0.2) and Citus's native query,
                             appends the runs to $BENCH_HOST/citus-state.json
  citus.py report            writes $OUT/citus.tsv, $OUT/citus.md,
                             $OUT/citus-raw.json and prints the table

For every query, budget (spillagg.work_mem, set on every node) and version:
  time     client wall clock around execute + fetch (fresh connection per
           run, jsonb not parsed); median of RUNS; spillagg and native runs
           interleaved (native only in the first budget's block)
  shipped  "Tuple data received from nodes" of EXPLAIN (ANALYZE) on the
           coordinator, summed over the plan's Citus scans (subplans too):
           the bytes of the values the coordinator read from the shards'
           result rows (libpq value lengths, text format; pg_size_pretty
           rounds it to kB/MB); one extra execution
  plan     EXPLAIN (VERBOSE): worker_partial_agg present = partial
           aggregation pushed down; else the shard query says what runs there
  answer   the last timed run's result against native's, per key (JSON maps
           compared as dicts, per group)
  memory   VmHWM of the coordinator backend after the query (read from /proc)
"""
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import psycopg2
import psycopg2.extras

ROWS = int(os.environ.get("ROWS", 2000000))
DISTINCT_K = int(os.environ.get("DISTINCT_K", ROWS // 5))
GROUPS = int(os.environ.get("BENCH_GROUPS", 100))
RUNS = int(os.environ.get("RUNS", 3))
BUDGETS = [int(b) for b in os.environ.get("BUDGETS", "-1 4096").split()]
OUT = os.environ.get("OUT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
HOST = os.environ["BENCH_HOST"]
PORTS = [int(p) for p in os.environ["BENCH_PORTS"].split()]  # coordinator, worker1, worker2
STATE = os.path.join(HOST, "citus-state.json")

# jsonb arrives as text: the client must not spend time parsing it.
psycopg2.extras.register_default_jsonb(globally=True, loads=lambda s: s)

QUERIES = [
    dict(name="count_distinct(k)",
         spillagg="SELECT count_distinct(k) FROM t",
         native="SELECT count(DISTINCT k) FROM t",
         norm=lambda rows: rows[0][0]),
    dict(name="count_map(k % 1000)",
         spillagg="SELECT count_map(k % 1000) FROM t",
         native="SELECT jsonb_object_agg(k2, c) FROM (SELECT k % 1000 AS k2, count(*) AS c FROM t GROUP BY 1) x",
         norm=lambda rows: json.loads(rows[0][0])),
    dict(name="sum_map(k % 100, v) GROUP BY g",
         spillagg="SELECT g, sum_map(k % 100, v) FROM t GROUP BY g",
         native="SELECT g, jsonb_object_agg(k2, sv) FROM "
                "(SELECT g, k % 100 AS k2, sum(v) AS sv FROM t GROUP BY g, k % 100) x GROUP BY g",
         norm=lambda rows: {g: json.loads(m) for g, m in rows}),
    dict(name="top_k(k, 10)",
         spillagg="SELECT top_k(k, 10) FROM t",
         native="SELECT k FROM t GROUP BY k ORDER BY count(*) DESC, k LIMIT 10",
         norm=None),  # set below: the array, or the 10 rows in order
]
QUERIES[3]["norm"] = lambda rows: list(rows[0][0]) if len(rows) == 1 and isinstance(rows[0][0], list) \
    else [r[0] for r in rows]


def connect(port=PORTS[0]):
    c = psycopg2.connect(host=HOST, port=port, user="postgres", dbname="postgres")
    c.autocommit = True
    return c


def one(sql, port=PORTS[0]):
    with connect(port) as c, c.cursor() as cur:
        cur.execute(sql)
        r = cur.fetchone()[0] if cur.description else None
    c.close()
    return r


def set_budget(kb):
    """spillagg.work_mem on every node: the workers run the partial aggregation."""
    for p in PORTS:
        c = connect(p)
        cur = c.cursor()
        cur.execute("LOAD 'spillagg'")  # so that ALTER SYSTEM knows the setting
        cur.execute(f"ALTER SYSTEM SET spillagg.work_mem = {kb}")
        cur.execute("SELECT pg_reload_conf()")
        c.close()
    time.sleep(0.5)
    for p in PORTS:
        got = one("LOAD 'spillagg'; SHOW spillagg.work_mem", p)
        if got != str(kb) and not (kb > 0 and got.lower() in (f"{kb}kb", f"{kb // 1024}mb")):
            raise SystemExit(f"citus-bench: spillagg.work_mem on port {p} is {got}, not {kb}")


def vmhwm_mb(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return None


def timed(sql):
    c = connect()
    cur = c.cursor()
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    t0 = time.perf_counter()
    cur.execute(sql)
    rows = cur.fetchall()
    ms = (time.perf_counter() - t0) * 1000.0
    hwm = vmhwm_mb(pid)
    c.close()
    return ms, hwm, rows


UNITS = {"bytes": 1, "kB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}


def explain(sql):
    c = connect()
    cur = c.cursor()
    cur.execute("EXPLAIN (VERBOSE, COSTS OFF) " + sql)
    plan = "\n".join(r[0] for r in cur.fetchall())
    # Citus 13.2's EXPLAIN ANALYZE wraps each shard query in
    # worker_save_query_explain_analyze(...) AS (field_0 cstring), which
    # fails on worker_partial_agg's cstring result ("column field_0 has
    # pseudo-type cstring"): then only the shard-side count below is there.
    try:
        cur.execute("EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF) " + sql)
        analyze = "\n".join(r[0] for r in cur.fetchall())
        shipped = sum(int(n) * UNITS[u] for n, u in
                      re.findall(r"Tuple data received from nodes: (\d+) (bytes|kB|MB|GB)", analyze))
    except psycopg2.Error as e:
        analyze, shipped = f"EXPLAIN ANALYZE failed: {e}".strip(), None
    # Where it failed, the same quantity counted on the shards: every task's
    # query (all tasks shown) run again on its node, summing the lengths of
    # the text forms of the values it returns. worker_partial_agg's cstring
    # is the same bytes in text and binary format; a GROUP BY column (int,
    # 4 bytes in Citus's binary protocol) counts its digits instead: a
    # difference of a few bytes per group and shard.
    shards = None
    if shipped is None and "Distributed Subplan" not in plan:
        cur.execute("SET citus.explain_all_tasks = on")
        cur.execute("EXPLAIN (VERBOSE, COSTS OFF) " + sql)
        full = "\n".join(r[0] for r in cur.fetchall())
        tasks = re.findall(r"Query: (.*)\n\s*Node: host=\S+ port=(\d+)", full)
        shards = 0
        for tq, port in tasks:
            shards += int(one("SELECT coalesce(sum(octet_length(j.value)), 0) FROM (" + tq + ") q, "
                              "json_each_text(row_to_json(q)) j", int(port)))
    c.close()
    inter = sum(int(n) * UNITS[u] for n, u in
                re.findall(r"Intermediate Data Size: (\d+) (bytes|kB|MB|GB)", analyze))
    shard_queries = re.findall(r"Query: (.*)", plan)
    if "worker_partial_agg" in plan:
        kind = "partial agg pushed down (worker_partial_agg)"
    elif any("GROUP BY" in q for q in shard_queries):
        kind = "GROUP BY pushed down"
    else:
        kind = "rows pulled"
    return dict(plan=plan, analyze=analyze, shipped=shipped if shipped is not None else shards,
                shipped_explain=shipped, shipped_shards=shards,
                shipped_source="EXPLAIN ANALYZE" if shipped is not None else "shards",
                intermediate=inter, kind=kind,
                shard_query=shard_queries[0] if shard_queries else "")


def measure(version):
    installed = one("SELECT extversion FROM pg_extension WHERE extname = 'spillagg'")
    if installed != version:
        raise SystemExit(f"citus-bench: spillagg {installed} is installed, not {version}")
    state = json.load(open(STATE)) if os.path.exists(STATE) else dict(runs=[], plans={}, loadavg={})
    state["loadavg"][f"before {version}"] = open("/proc/loadavg").read().strip()
    for bi, budget in enumerate(BUDGETS):
        set_budget(budget)
        for q in QUERIES:
            engines = [("spillagg " + version, q["spillagg"])]
            if bi == 0:
                engines.append(("native", q["native"]))
            for e, sql in engines:
                key = f"{q['name']}|{budget if e != 'native' else '-'}|{e}"
                if key not in state["plans"]:
                    state["plans"][key] = explain(sql)
            last = {}
            for i in range(RUNS):
                for e, sql in engines:
                    ms, hwm, rows = timed(sql)
                    last[e] = rows
                    state["runs"].append(dict(query=q["name"], budget=budget if e != "native" else "-",
                                              engine=e, phase=version, run=i, ms=ms, vmhwm_mb=hwm))
            spill_res = q["norm"](last["spillagg " + version])
            state.setdefault("results", {})[f"{q['name']}|{budget}|spillagg {version}"] = spill_res
            if "native" in last:
                state["results"][f"{q['name']}|-|native|{version}"] = q["norm"](last["native"])
            msg = ", ".join(f"{e} {statistics.median(r['ms'] for r in state['runs'] if r['query'] == q['name'] and r['engine'] == e and r['phase'] == version and r['budget'] == (budget if e != 'native' else '-')):.0f} ms"
                            for e, _ in engines)
            print(f"citus-bench: {version}, spillagg.work_mem={budget}: {q['name']}: {msg}", flush=True)
    state["loadavg"][f"after {version}"] = open("/proc/loadavg").read().strip()
    state.setdefault("settings", {})[f"spillagg {version} on every node"] = ", ".join(
        str(one("SELECT extversion FROM pg_extension WHERE extname = 'spillagg'", p)) for p in PORTS)
    with open(STATE, "w") as fh:
        json.dump(state, fh, default=str)


def fmt_bytes(n):
    if n is None:
        return "-"
    for unit, div in (("GB", 1024 ** 3), ("MB", 1024 ** 2), ("kB", 1024)):
        if n >= 10 * div:
            return f"{n / div:,.1f} {unit}"
    return f"{n:,} bytes"


def same(a, b):
    # JSON keys are strings; numbers compare equal across int/float only if equal.
    return "yes" if json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str) else "NO"


def machine():
    cpu = ""
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1)
    except (OSError, AttributeError):
        pass
    mem = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1)) // 1024 // 1024
    return f"{os.cpu_count()} CPUs ({cpu}), {mem} GB RAM, Linux {platform.release()}"


def report():
    state = json.load(open(STATE))
    runs, plans, results = state["runs"], state["plans"], state["results"]
    rows = []
    mismatches = {}
    for q in QUERIES:
        ref = results.get(f"{q['name']}|-|native|0.2", results.get(f"{q['name']}|-|native|0.1"))
        # native: every run of both phases; its answer must not change between them
        nat = [r for r in runs if r["query"] == q["name"] and r["engine"] == "native"]
        nat_ms = statistics.median(r["ms"] for r in nat)
        nat_stable = results.get(f"{q['name']}|-|native|0.1") == results.get(f"{q['name']}|-|native|0.2")
        order = [(b, f"spillagg {v}") for v in ("0.1", "0.2") for b in BUDGETS] + [("-", "native")]
        for budget, e in order:
            rs = [r for r in runs if r["query"] == q["name"] and r["engine"] == e and str(r["budget"]) == str(budget)]
            if not rs:
                continue
            ms = [r["ms"] for r in rs]
            p = plans[f"{q['name']}|{budget}|{e}"]
            if e == "native":
                ok = "reference" + ("" if nat_stable else " (DIFFERS between phases)")
            else:
                res = results[f"{q['name']}|{budget}|{e}"]
                ok = same(res, ref)
                if ok != "yes":
                    mismatches[f"{q['name']}|{budget}|{e}"] = dict(spillagg=str(res)[:2000], native=str(ref)[:2000])
            rows.append(dict(query=q["name"], engine=e, budget=budget, median_ms=round(statistics.median(ms), 1),
                             min_ms=round(min(ms), 1), max_ms=round(max(ms), 1), runs=len(ms),
                             ratio_to_native=round(statistics.median(ms) / nat_ms, 2),
                             shipped_bytes=p["shipped"], shipped_source=p["shipped_source"],
                             shipped_explain_bytes=p["shipped_explain"], shipped_shards_bytes=p["shipped_shards"],
                             intermediate_bytes=p["intermediate"],
                             same_answer=ok, plan=p["kind"],
                             coord_vmhwm_mb=round(max(r["vmhwm_mb"] for r in rs), 1),
                             shard_query=p["shard_query"][:300]))
    os.makedirs(OUT, exist_ok=True)
    cols = ["query", "engine", "budget", "median_ms", "min_ms", "max_ms", "runs", "ratio_to_native",
            "shipped_bytes", "shipped_source", "shipped_explain_bytes", "shipped_shards_bytes",
            "intermediate_bytes", "same_answer", "plan", "coord_vmhwm_mb", "shard_query"]
    with open(os.path.join(OUT, "citus.tsv"), "w") as fh:
        fh.write("\t".join(cols) + "\n")
        for r in rows:
            fh.write("\t".join(str(r[c]).replace("\t", " ") for c in cols) + "\n")

    total = int(time.time()) - int(os.environ.get("STARTED", time.time()))
    sett = {}
    sett["PostgreSQL"] = one("SHOW server_version")
    sett["Citus"] = os.environ.get("CITUS_VERSION", "?") + \
        f"; {one('SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = ' + chr(39) + 't' + chr(39) + '::regclass')} shards of t " \
        f"over 2 workers; citus.count_distinct_error_rate = {one('SHOW citus.count_distinct_error_rate')} (exact); " \
        f"citus.coordinator_aggregation_strategy = {one('SHOW citus.coordinator_aggregation_strategy')}; " \
        f"citus.enable_binary_protocol = {one('SHOW citus.enable_binary_protocol')}"
    for s in ("work_mem", "hash_mem_multiplier", "shared_buffers", "max_parallel_workers_per_gather", "jit"):
        sett[s] = one(f"SHOW {s}") + " (every node)"
    sett["spillagg.work_mem"] = " and ".join(str(b) for b in BUDGETS) + \
        " kB (ALTER SYSTEM on every node; -1 = work_mem x hash_mem_multiplier)"
    sett.update(state.get("settings", {}))
    sett["CREATE/ALTER EXTENSION propagation"] = os.environ.get("PROPAGATION", "?").strip().replace("\n", " | ")
    sett["table t"] = (f"{ROWS:,} rows, distributed by id; k = (i * 7919) % {DISTINCT_K:,} ({DISTINCT_K:,} distinct, "
                       f"{ROWS / DISTINCT_K:g} rows each), g = hash % {GROUPS}, v = hash % 1000; "
                       f"{one(chr(39).join(['SELECT pg_size_pretty(citus_table_size(', 't', '))']))}; "
                       f"load + VACUUM ANALYZE {os.environ.get('LOAD_SECONDS', '?')} s")
    try:
        git = subprocess.run(["git", "log", "-1", "--format=%h"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        git = "?"
    sett["spillagg git"] = f"{git} (source tree; the build measured is the installed spillagg.so)"
    sett["machine"] = machine()
    sett["load before (uptime)"] = os.environ.get("UPTIME_BEFORE", "?").strip()
    sett["load after (uptime)"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    sett["load averages per phase"] = "; ".join(f"{k}: {v}" for k, v in state["loadavg"].items())
    sett["total run"] = f"{total // 60} min {total % 60} s"

    out = [f"# spillagg on Citus: 0.1 (rows pulled) vs 0.2 (pushed down) vs Citus native", ""]
    out.append(f"{ROWS:,} rows in a distributed table (coordinator + 2 workers on one host), "
               f"{DISTINCT_K:,} distinct k, {GROUPS} groups g; median of {RUNS} run(s) per version "
               f"(native: {RUNS} in each phase), each in a fresh connection.")
    out.append("")
    out.append("| query | engine | spillagg.work_mem | median ms | min-max ms | / native | shipped to coordinator "
               "| same answer | plan | coordinator VmHWM MB |")
    out.append("|---|---|---:|---:|---:|---:|---:|:---:|---|---:|")
    for r in rows:
        b = "-" if r["budget"] == "-" else ("default (-1)" if int(r["budget"]) == -1 else f"{r['budget']} kB")
        out.append(f"| `{r['query']}` | {r['engine']} | {b} | {r['median_ms']:,.0f} | "
                   f"{r['min_ms']:,.0f}-{r['max_ms']:,.0f} | {r['ratio_to_native']:.2f} | "
                   f"{fmt_bytes(r['shipped_bytes'])}{'' if r['shipped_source'] == 'EXPLAIN ANALYZE' else ' *'}"
                   + (f" (+{fmt_bytes(r['intermediate_bytes'])} intermediate)" if r["intermediate_bytes"] else "")
                   + f" | {r['same_answer']} | {r['plan']} | {r['coord_vmhwm_mb']:.0f} |")
    out.append("")
    out.append("Native queries: `count(DISTINCT k)` (Citus exact: `GROUP BY k` on the shards); "
               "`jsonb_object_agg(k2, c)` over `SELECT k % 1000 AS k2, count(*) c FROM t GROUP BY 1`; "
               "`g, jsonb_object_agg(k2, sv)` over `SELECT g, k % 100 k2, sum(v) sv FROM t GROUP BY g, k % 100`; "
               "`SELECT k FROM t GROUP BY k ORDER BY count(*) DESC, k LIMIT 10`.")
    out.append("")
    out.append("Time: client wall clock around execute + fetch on the coordinator (jsonb not parsed). "
               "Shipped: \"Tuple data received from nodes\" of Citus's EXPLAIN (ANALYZE), summed over the "
               "plan's Citus scans (subplans included): the lengths of the values the coordinator read "
               "from the shards' rows (libpq value lengths, in the format Citus asked for: binary for built-in types "
               "with citus.enable_binary_protocol, so an int is 4 bytes; spillagg 0.2's state is its text form, hex), "
               "without protocol overhead, rounded by "
               "pg_size_pretty. * = counted on the shards instead, because Citus 13.2's EXPLAIN ANALYZE fails on "
               "worker_partial_agg (its wrapper declares the cstring result column as cstring: \"column field_0 has "
               "pseudo-type cstring\"): every shard query of EXPLAIN (VERBOSE) with citus.explain_all_tasks = on run "
               "again on its worker, summing the text lengths of the values it returns (json_each_text of "
               "row_to_json) - the same quantity; citus.tsv has both counts where both exist. \"intermediate\": a subplan's result Citus broadcast back as an intermediate result. "
               "Same answer: the result of the last timed run compared per key (maps as JSON objects, per "
               "group g; top_k as the ordered list) with native's. Plan: from EXPLAIN (VERBOSE) on the "
               "coordinator. Coordinator VmHWM: peak RSS of the coordinator backend (largest over the runs; "
               "the workers' backends are not in it). Native and 0.x runs were interleaved; native's median "
               "is over both phases' runs. The host has 2 cores shared by the three nodes, the client and "
               "other users' work: timings are noisy (see the load figures below); look at ratios.")
    out.append("")
    out.append("Settings:")
    out.append("")
    for k, v in sett.items():
        out.append(f"- {k}: {v}")
    out.append("")
    md = "\n".join(out)
    with open(os.path.join(OUT, "citus.md"), "w") as fh:
        fh.write(md)
    with open(os.path.join(OUT, "citus-raw.json"), "w") as fh:
        json.dump(dict(settings=sett, rows=rows, runs=runs,
                       plans={k: dict(v, plan=v["plan"], analyze=v["analyze"]) for k, v in plans.items()},
                       mismatches=mismatches), fh, indent=1, default=str)
    print()
    print(md)
    if mismatches:
        print("citus-bench: ANSWERS DIFFER:")
        print(json.dumps(mismatches, indent=1, default=str)[:5000])
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "measure":
        sys.exit(measure(sys.argv[2]))
    if len(sys.argv) == 2 and sys.argv[1] == "report":
        sys.exit(report())
    sys.exit(__doc__)

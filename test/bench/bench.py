#!/usr/bin/python3
"""Measurement half of test/bench/run.sh (which sets the environment, starts
the cluster and loads table t). For every case and worker count it runs the
spillagg query and PostgreSQL's own query for the same answer RUNS times,
each run in a fresh connection, and records:

  wall time   client clock around execute + fetch of the whole query
  VmHWM       /proc/<backend pid>/status after the query, connection still open
              (the leader's process only; parallel workers are processes of their
              own: their VmHWM is sampled every 20 ms while they live, a lower bound)
  temp bytes  sizes of the temp files the backend and its parallel workers
              removed, from log_temp_files lines (log_line_prefix has %p and %P),
              cross-checked against the pg_stat_database.temp_bytes delta
  answer      one extra run of both queries, compared in SQL (FULL JOIN on the
              group, IS DISTINCT FROM; jsonb equality for maps)
  plan        EXPLAIN (COSTS OFF) as a chain of nodes

Writes OUT/bench.tsv, OUT/bench.png, OUT/bench.md, OUT/raw.json and prints
the Markdown table. "bench.py --replot DIR" redraws DIR/bench.png and
DIR/bench.md from DIR/bench.tsv and DIR/raw.json (no database needed).
"""
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time

import psycopg2
import psycopg2.extras

ROWS = int(os.environ.get("ROWS", 10000000))
DISTINCT_K = int(os.environ.get("DISTINCT_K", 2000000))
GROUPS = int(os.environ.get("BENCH_GROUPS", 100))
RUNS = int(os.environ.get("RUNS", 3))
BUDGET_KB = int(os.environ.get("BUDGET_KB", 4096))
WORKERS = [int(w) for w in os.environ.get("WORKERS", "0 2").split()]
HLL = os.environ.get("HLL", "0") == "1"
OUT = os.environ.get("OUT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
LOG = os.environ.get("SERVER_LOG")
PGDATA = os.environ.get("BENCH_PGDATA")          # to restart the server between blocks
PGCTL = os.environ.get("BENCH_PGCTL", "pg_ctl")
SO = os.environ.get("BENCH_SO")                  # the pinned copy of spillagg.so that runs
SO_INSTALLED = os.environ.get("BENCH_SO_INSTALLED")  # the installed one it was copied from
# A run is "contended" when processes other than its backend, its workers and
# this client used more than this many CPU cores on average during it (other
# sessions' builds and tests on a shared machine); contended runs are retried.
FOREIGN_MAX = float(os.environ.get("FOREIGN_MAX", 0.25))
CLK = os.sysconf("SC_CLK_TCK")
STARTED = int(os.environ.get("STARTED", time.time()))
LOAD_SECONDS = os.environ.get("LOAD_SECONDS", "?")

# jsonb arrives as text: the client must not spend time parsing it.
psycopg2.extras.register_default_jsonb(globally=True, loads=lambda s: s)

# Each case: spillagg and native queries returning column r (and g when
# grouped); hll only where an approximate reference makes sense.
CASES = [
    dict(name="count_distinct(k)", grouped=False,
         spillagg="SELECT count_distinct(k) AS r FROM t",
         native="SELECT count(DISTINCT k) AS r FROM t",
         hll="SELECT hll_cardinality(hll_add_agg(hll_hash_integer(k)))::bigint AS r FROM t"),
    # the same at spillagg's default budget (-1: work_mem * hash_mem_multiplier,
    # the memory native HashAggregate may use), where the 2M keys fit
    dict(name="count_distinct(k), default budget", grouped=False, budget_kb=-1,
         spillagg="SELECT count_distinct(k) AS r FROM t",
         native="SELECT count(DISTINCT k) AS r FROM t"),
    dict(name="count_distinct(s)", grouped=False,
         spillagg="SELECT count_distinct(s) AS r FROM t",
         native="SELECT count(DISTINCT s) AS r FROM t"),
    dict(name="count_distinct(k) GROUP BY g", grouped=True,
         spillagg="SELECT g, count_distinct(k) AS r FROM t GROUP BY g",
         native="SELECT g, count(DISTINCT k) AS r FROM t GROUP BY g"),
    dict(name="count_map(g)", grouped=False,
         spillagg="SELECT count_map(g) AS r FROM t",
         native="SELECT jsonb_object_agg(g, c) AS r FROM (SELECT g, count(*) AS c FROM t GROUP BY g) x"),
    dict(name="count_map(k % 1000) GROUP BY g", grouped=True,
         spillagg="SELECT g, count_map(k % 1000) AS r FROM t GROUP BY g",
         native="SELECT g, jsonb_object_agg(k2, c) AS r FROM "
                "(SELECT g, k % 1000 AS k2, count(*) AS c FROM t GROUP BY 1, 2) x GROUP BY g"),
    dict(name="sum_map(k % 1000, v) GROUP BY g", grouped=True,
         spillagg="SELECT g, sum_map(k % 1000, v) AS r FROM t GROUP BY g",
         native="SELECT g, jsonb_object_agg(k2, sv) AS r FROM "
                "(SELECT g, k % 1000 AS k2, sum(v) AS sv FROM t GROUP BY 1, 2) x GROUP BY g"),
    dict(name="top_k(k, 10)", grouped=False,
         spillagg="SELECT top_k(k, 10) AS r FROM t",
         native="SELECT array_agg(k ORDER BY c DESC, k) AS r FROM "
                "(SELECT k, count(*) AS c FROM t GROUP BY k ORDER BY count(*) DESC, k LIMIT 10) x"),
    dict(name="sum(v) (scan floor)", grouped=False,
         floor="SELECT sum(v) AS r FROM t"),
    # the per-group floor: the scan plus one transition call per row into
    # one of 100 groups' states (what the per-group map rows pay before any
    # key of theirs is hashed)
    dict(name="sum(v) GROUP BY g (per-group floor)", grouped=True,
         floor="SELECT g, sum(v) AS r FROM t GROUP BY g"),
]

TEMP_RE = re.compile(r'\[(\d+)\] leader=(\d*) .*temporary file: path "[^"]+", size (\d+)')


def connect():
    conn = psycopg2.connect(dbname="postgres")
    conn.autocommit = True
    return conn


MONITOR = None


def monitor():
    global MONITOR
    if MONITOR is None or MONITOR.closed:
        MONITOR = connect()
    return MONITOR


def one(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()


def stat_temp_bytes():
    one(monitor(), "SELECT pg_stat_clear_snapshot()")
    return one(monitor(), "SELECT temp_bytes FROM pg_stat_database WHERE datname = current_database()")[0]


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, val = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(val.split()[0]) / 1024.0  # kB -> MB
    return out


def proc_cpu_ms(pid):
    """utime + stime of a process, in ms."""
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1000.0 / CLK


def host_busy_ms():
    """CPU time used by everything on the host (all CPUs; steal included), in ms."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = f[:8]
    return (user + nice + system + irq + softirq + steal) * 1000.0 / CLK


def self_cpu_ms():
    t = os.times()
    return (t.user + t.system) * 1000.0


WAIT_LEFT = [float(os.environ.get("QUIET_WAIT_TOTAL", 300))]
# seconds of contended runs that may be thrown away and retried, in all; on a
# host that stays busy retrying does not help, and the CPU ratio is the measure
RETRY_LEFT = [float(os.environ.get("RETRY_BUDGET", 600))]


def wait_quiet(max_wait=10.0):
    """Waits (up to max_wait s per run, QUIET_WAIT_TOTAL s per benchmark) until
    the host is idle apart from us: other sessions' builds and tests would
    distort the timings. Returns seconds waited."""
    waited = 0.0
    while waited < min(max_wait, WAIT_LEFT[0]):
        h0, s0 = host_busy_ms(), self_cpu_ms()
        time.sleep(0.5)
        foreign = (host_busy_ms() - h0 - (self_cpu_ms() - s0)) / 500.0
        if foreign <= FOREIGN_MAX:
            break
        waited += 0.5
    WAIT_LEFT[0] -= waited
    return waited


def so_fingerprint(path=None):
    path = path or SO
    if not path or not os.path.exists(path):
        return "?"
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()[:16]
    mtime = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(os.path.getmtime(path)))
    return f"sha256 {digest}, installed {mtime} UTC"


def restart_server():
    """A fresh postmaster for every block: nothing of t left in shared buffers
    from earlier blocks, so a backend's VmHWM (which counts the shared buffers
    it touched) does not drift over the run."""
    global MONITOR
    if not PGDATA:
        return
    if MONITOR is not None:
        MONITOR.close()
        MONITOR = None
    cmd = [PGCTL, "-D", PGDATA, "-l", LOG, "-w", "-m", "fast", "restart"]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def wait_gone(pid, timeout=30):
    end = time.time() + timeout
    while os.path.exists(f"/proc/{pid}") and time.time() < end:
        time.sleep(0.01)
    # its parallel workers have exited before the Gather returned; give the
    # stats of both a moment to reach shared memory
    time.sleep(0.05)


class WorkerSampler(threading.Thread):
    """Samples VmHWM of the parallel workers of backend `leader` while they
    live ("postgres: parallel worker for PID <leader>"). VmHWM only grows, so
    the last sample of each worker is close to its peak (a lower bound)."""

    def __init__(self, leader):
        super().__init__(daemon=True)
        self.tag = f"parallel worker for PID {leader}".encode()
        self.peak = {}
        self.cpu = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for d in os.listdir("/proc"):
                if not d.isdigit():
                    continue
                try:
                    with open(f"/proc/{d}/cmdline", "rb") as fh:
                        if self.tag not in fh.read():
                            continue
                    hwm = proc_status(d)["VmHWM"]
                    cpu = proc_cpu_ms(d)
                except (OSError, KeyError, IndexError, ValueError):
                    continue
                self.peak[d] = max(self.peak.get(d, 0.0), hwm)
                self.cpu[d] = cpu
            self.stop.wait(0.02)


def log_temp_bytes(offset, pid):
    total, files = 0, 0
    with open(LOG, errors="replace") as fh:
        fh.seek(offset)
        for line in fh:
            m = TEMP_RE.search(line)
            if m and (int(m.group(1)) == pid or m.group(2) == str(pid)):
                total += int(m.group(3))
                files += 1
    return total, files


CASE_BUDGET_KB = [None]  # a case's own spillagg.work_mem, if it has one


def session_setup(cur, workers, engine):
    cur.execute(f"SET max_parallel_workers_per_gather = {workers}")
    if engine == "spillagg":
        budget = CASE_BUDGET_KB[0] if CASE_BUDGET_KB[0] is not None else BUDGET_KB
        cur.execute(f"SET spillagg.work_mem = {budget}")


def measure(sql, workers, engine):
    """One run in a fresh connection."""
    stat_before = stat_temp_bytes()
    conn = connect()
    cur = conn.cursor()
    session_setup(cur, workers, engine)
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    before = proc_status(pid)
    offset = os.path.getsize(LOG)
    sampler = None
    if workers > 0:
        sampler = WorkerSampler(pid)
        sampler.start()
    cpu0, host0, self0 = proc_cpu_ms(pid), host_busy_ms(), self_cpu_ms()
    t0 = time.perf_counter()
    cur.execute(sql)
    rows = cur.fetchall()
    ms = (time.perf_counter() - t0) * 1000.0
    host1, self1, cpu1 = host_busy_ms(), self_cpu_ms(), proc_cpu_ms(pid)
    if sampler:
        sampler.stop.set()
        sampler.join()
    after = proc_status(pid)
    workers_cpu = sum(sampler.cpu.values()) if sampler else 0.0
    own = (cpu1 - cpu0) + workers_cpu + (self1 - self0)
    foreign = max(0.0, (host1 - host0) - own) / ms
    spill = None
    if engine == "spillagg":
        cur.execute("SELECT states, spills, runs, bytes_written, peak_bytes FROM spillagg_stats()")
        spill = dict(zip(("states", "spills", "runs", "bytes_written", "peak_bytes"), cur.fetchone()))
    conn.close()
    wait_gone(pid)
    temp_log, temp_files = log_temp_bytes(offset, pid)
    temp_stat = stat_temp_bytes() - stat_before
    return dict(ms=ms, cpu_ms=(cpu1 - cpu0) + workers_cpu, foreign_cores=round(foreign, 3),
                pid=pid, vmhwm_mb=after["VmHWM"], vmhwm_before_mb=before["VmHWM"],
                rss_shmem_mb=after.get("RssShmem"), rss_anon_mb=after.get("RssAnon"),
                temp_bytes=temp_log, temp_files=temp_files, temp_bytes_stat=temp_stat,
                workers_vmhwm_mb=sorted(sampler.peak.values(), reverse=True) if sampler else [],
                spill=spill, result=rows)


def plan_chain(node):
    t = node["Node Type"]
    if t == "Aggregate":
        t = {"Plain": "Aggregate", "Sorted": "GroupAggregate", "Hashed": "HashAggregate",
             "Mixed": "MixedAggregate"}.get(node.get("Strategy"), "Aggregate")
        if node.get("Partial Mode", "Simple") != "Simple":
            t = node["Partial Mode"] + " " + t
    elif t in ("Gather", "Gather Merge"):
        t += f"({node.get('Workers Planned')})"
    elif node.get("Parallel Aware"):
        t = "Parallel " + t
    if node.get("Parent Relationship") in ("InitPlan", "SubPlan"):
        t = node["Parent Relationship"] + ": " + t
    kids = [plan_chain(k) for k in node.get("Plans", [])]
    if not kids:
        return t
    if len(kids) == 1:
        return t + " > " + kids[0]
    return t + " > [" + " | ".join(kids) + "]"


def explain(sql, workers, engine):
    conn = connect()
    cur = conn.cursor()
    session_setup(cur, workers, engine)
    cur.execute("EXPLAIN (COSTS OFF, FORMAT JSON) " + sql)
    plan = cur.fetchone()[0]
    conn.close()
    if isinstance(plan, str):
        plan = json.loads(plan)
    return plan_chain(plan[0]["Plan"])


def check(case, workers):
    """Both answers compared in SQL; returns (ok, detail)."""
    a, b = case["spillagg"], case["native"]
    if not case["grouped"]:
        a = f"SELECT 0 AS g, r FROM ({a}) a0"
        b = f"SELECT 0 AS g, r FROM ({b}) b0"
    conn = connect()
    cur = conn.cursor()
    session_setup(cur, workers, "spillagg")
    cur.execute(f"""WITH a AS ({a}), b AS ({b})
        SELECT count(*) FILTER (WHERE a.r IS DISTINCT FROM b.r), count(*), count(a.g), count(b.g)
        FROM a FULL JOIN b USING (g)""")
    bad, n, na, nb = cur.fetchone()
    detail = None
    if bad or n == 0:
        cur.execute(f"""WITH a AS ({a}), b AS ({b})
            SELECT g, a.r::text, b.r::text FROM a FULL JOIN b USING (g)
            WHERE a.r IS DISTINCT FROM b.r ORDER BY g LIMIT 3""")
        detail = dict(groups=n, spillagg_groups=na, native_groups=nb, mismatched_groups=bad,
                      examples=[dict(g=g, spillagg=x, native=y) for g, x, y in cur.fetchall()])
    conn.close()
    return bad == 0 and n > 0, detail


def settings():
    conn = connect()
    s = {}
    for name in ("server_version", "shared_buffers", "work_mem", "hash_mem_multiplier",
                 "max_parallel_workers", "max_worker_processes", "parallel_leader_participation",
                 "jit", "lc_collate", "autovacuum", "fsync"):
        s[name] = one(conn, f"SHOW {name}")[0]
    s["spillagg version"] = one(conn, "SELECT extversion FROM pg_extension WHERE extname = 'spillagg'")[0]
    if HLL:
        s["hll version"] = one(conn, "SELECT extversion FROM pg_extension WHERE extname = 'hll'")[0]
    s["spillagg.so"] = so_fingerprint() + " (a copy pinned in the cluster for the whole run)"
    s["table t"] = one(conn, "SELECT pg_size_pretty(pg_table_size('t'))")[0]
    conn.close()
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        rev = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip()
        s["spillagg git"] = (rev or "?") + " (working tree of the source; the build measured is spillagg.so)"
    except OSError:
        s["spillagg git"] = "?"
    cpu = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as fh:
        mem_gb = int(fh.readline().split()[1]) / 1024 / 1024
    s["machine"] = f"{os.cpu_count()} CPUs ({cpu}), {mem_gb:.0f} GB RAM, {platform.system()} {platform.release()}"
    return s


def fmt_bytes(b):
    if b is None:
        return "n/a"
    if b == 0:
        return "0"
    return f"{b / 1048576:.0f} MB" if b >= 10 * 1048576 else f"{b / 1048576:.1f} MB"


def main():
    sett = settings()
    so_at_start = so_fingerprint()
    # warm the OS page cache (t is larger than shared_buffers / 4, so scans
    # go through a small ring of buffers and re-read it from the page cache)
    c = connect()
    one(c, "SELECT sum(v) FROM t")
    c.close()
    # what a fresh backend weighs before any query
    c = connect()
    pid = one(c, "SELECT pg_backend_pid()")[0]
    sett["fresh backend VmHWM"] = f"{proc_status(pid)['VmHWM']:.1f} MB"
    c.close()

    rows, raw = [], []
    mismatches = []
    for case in CASES:
        CASE_BUDGET_KB[0] = case.get("budget_kb")
        engines = [e for e in ("spillagg", "native", "hll", "floor") if e in case]
        for w in WORKERS:
            print(f"bench: {case['name']}, workers={w}", flush=True)
            if so_fingerprint() != so_at_start:  # cannot happen to the pinned copy
                sys.exit(f"bench: {SO} changed during the run")
            restart_server()
            active = [e for e in engines if not (e == "hll" and not HLL)]
            plans = {e: explain(case[e], w, e) for e in active}
            # engines interleaved run by run; a run during which other processes
            # used the CPUs is kept in raw.json but retried, up to 2 * RUNS attempts
            every = {e: [] for e in engines}
            runs = {e: [] for e in engines}
            for _ in range(2 * RUNS):
                need = [e for e in active if len(runs[e]) < RUNS]
                if not need:
                    break
                for e in need:
                    waited = wait_quiet()
                    m = measure(case[e], w, e)
                    m["waited_for_quiet_s"] = waited
                    # (100 ms of slack: /proc/stat counts in 10 ms ticks per CPU)
                    m["contended"] = (m["foreign_cores"] > FOREIGN_MAX
                                      and m["foreign_cores"] * m["ms"] > 100)
                    every[e].append(m)
                    if not m["contended"]:
                        runs[e].append(m)
                    elif RETRY_LEFT[0] > 0:
                        RETRY_LEFT[0] -= m["ms"] / 1000.0
                        print(f"bench:   {e} run contended ({m['foreign_cores']:.2f} cores used by other "
                              f"processes, {m['ms']:.0f} ms); retrying", flush=True)
                    else:
                        runs[e].append(m)
                        print(f"bench:   {e} run contended ({m['foreign_cores']:.2f} cores used by other "
                              f"processes, {m['ms']:.0f} ms); retry budget spent, kept", flush=True)
            for e in active:
                if not runs[e]:  # never quiet: use what there is
                    runs[e] = every[e]
            ok, detail = (None, None)
            if "native" in case:
                ok, detail = check(case, w)
                if not ok:
                    mismatches.append(dict(case=case["name"], workers=w, spillagg=case["spillagg"],
                                           native=case["native"], detail=detail))
            med = {e: statistics.median(r["ms"] for r in runs[e]) for e in engines if runs[e]}
            for e in engines:
                r = runs[e]
                row = dict(case=case["name"], workers=w, engine=e)
                if not r:  # hll without the extension
                    row.update(median_ms="n/a", ratio_to_native="n/a", vmhwm_mb="n/a", temp_bytes="n/a",
                               answer_ok="n/a", plan_note="hll extension not available", cpu_ms="n/a")
                    rows.append(row)
                    continue
                row["median_ms"] = f"{med[e]:.1f}"
                # CPU time of the backend and its workers: what contention on a shared host
                # disturbs least
                row["cpu_ms"] = f"{statistics.median(x['cpu_ms'] for x in r):.0f}"
                row["ratio_to_native"] = f"{med[e] / med['native']:.3f}" if "native" in med else ""
                # memory and temp bytes: the largest over all runs
                row["vmhwm_mb"] = f"{max(x['vmhwm_mb'] for x in every[e]):.1f}"
                row["temp_bytes"] = str(max(x["temp_bytes"] for x in every[e]))
                if e == "spillagg":
                    row["answer_ok"] = "yes" if ok else "NO"
                elif e == "native":
                    row["answer_ok"] = "reference"
                elif e == "hll":
                    exact = runs["native"][0]["result"][0][0]
                    approx = r[0]["result"][0][0]
                    row["answer_ok"] = f"approx ({(approx - exact) / exact * 100:+.2f}%)"
                else:
                    row["answer_ok"] = "-"
                note = plans[e]
                note += "; partial aggregation" if "Partial" in note else "; no partial aggregation"
                dropped = len(every[e]) - len(r)
                if any(x["contended"] for x in r):
                    note += f"; CONTENDED: median includes runs with other load on the host"
                elif dropped:
                    note += f"; {dropped} contended run(s) retried"
                wk = max((x["workers_vmhwm_mb"] for x in every[e]), key=sum)
                row["_workers_mb"] = sum(wk)
                if wk:
                    note += "; workers VmHWM (sampled) " + " + ".join(f"{m:.0f}" for m in wk) + " MB"
                if e == "spillagg":
                    sp = r[-1]["spill"]
                    note += (f"; leader spillagg_stats: spills={sp['spills']} runs={sp['runs']} "
                             f"bytes_written={sp['bytes_written']} peak_bytes={sp['peak_bytes']}")
                row["plan_note"] = note
                rows.append(row)
                for x in every[e]:
                    x = dict(x)
                    x["result"] = str(x["result"])[:200]
                    raw.append(dict(case=case["name"], workers=w, engine=e, plan=plans[e], **x))
                if any(abs(x["temp_bytes"] - x["temp_bytes_stat"]) > 0 for x in every[e]):
                    print(f"bench:   note: {e} temp bytes from the log {[x['temp_bytes'] for x in every[e]]} "
                          f"vs pg_stat_database {[x['temp_bytes_stat'] for x in every[e]]}", flush=True)
            line = ", ".join(f"{e} {med[e]:.0f} ms" for e in med)
            print(f"bench:   {line}; answer {'ok' if ok else ok}", flush=True)

    if SO_INSTALLED and so_fingerprint(SO_INSTALLED) != so_at_start:
        sett["spillagg.so"] += (f"; the installed spillagg.so was replaced during the run "
                                f"({so_fingerprint(SO_INSTALLED)}), not measured")
    total = int(time.time()) - STARTED
    n_cont = sum(1 for x in raw if x["contended"])
    sett["contended runs (other load on the host)"] = (
        f"{n_cont} of {len(raw)}; " + ", ".join(
            f"{e} {sum(1 for r in rows if r['engine'] == e and 'CONTENDED' in r.get('plan_note', ''))}"
            for e in ("spillagg", "native")) + " of the medians include contended runs")
    os.makedirs(OUT, exist_ok=True)
    cols = ["case", "workers", "engine", "median_ms", "ratio_to_native", "vmhwm_mb", "temp_bytes",
            "answer_ok", "plan_note", "cpu_ms"]
    with open(os.path.join(OUT, "bench.tsv"), "w") as fh:
        fh.write("\t".join(cols) + "\n")
        for r in rows:
            fh.write("\t".join(str(r[c]) for c in cols) + "\n")
    params = dict(ROWS=ROWS, DISTINCT_K=DISTINCT_K, GROUPS=GROUPS, RUNS=RUNS, BUDGET_KB=BUDGET_KB,
                  WORKERS=WORKERS, FOREIGN_MAX=FOREIGN_MAX, LOAD_SECONDS=LOAD_SECONDS, total=total)
    with open(os.path.join(OUT, "raw.json"), "w") as fh:
        json.dump(dict(params=params, settings=sett, runs=raw, mismatches=mismatches), fh, indent=1,
                  default=str)
    if mismatches:
        with open(os.path.join(OUT, "mismatches.json"), "w") as fh:
            json.dump(mismatches, fh, indent=1, default=str)
    elif os.path.exists(os.path.join(OUT, "mismatches.json")):
        os.remove(os.path.join(OUT, "mismatches.json"))

    md = markdown(rows, sett, total)
    with open(os.path.join(OUT, "bench.md"), "w") as fh:
        fh.write(md)
    chart(rows)
    print()
    print(md)
    if mismatches:
        print("bench: ANSWERS DIFFER, see mismatches.json:")
        print(json.dumps(mismatches, indent=1, default=str))


def markdown(rows, sett, total):
    by = {(r["case"], r["workers"], r["engine"]): r for r in rows}
    def par(x):
        note = x["plan_note"]
        return "partial" if "Partial" in note else "gather" if "Gather" in note else "serial"

    def wmem(x):
        m = re.search(r"workers VmHWM \(sampled\) ([0-9 +]+) MB", x["plan_note"])
        return f" (+{m.group(1).replace(' ', '')})" if m else ""

    out = []
    out.append(f"{ROWS:,} rows, {DISTINCT_K:,} distinct k, {GROUPS} groups; spillagg.work_mem = {BUDGET_KB} kB, "
               f"native queries at work_mem = {sett['work_mem']} (hash_mem_multiplier {sett['hash_mem_multiplier']}); "
               f"median of {RUNS} run(s), each in a fresh connection.")
    out.append("")
    out.append("| case | workers | spillagg ms | native ms | spillagg / native | CPU spillagg / native "
               "| VmHWM MB spillagg / native | temp spillagg / native | same answer | parallel plan spillagg / native |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|:---:|---|")

    def cpu_ratio(x, n):
        return f"{float(x['cpu_ms']) / float(n['cpu_ms']):.2f}" if float(n["cpu_ms"]) > 0 else "-"
    seen = []
    for r in rows:
        key = (r["case"], r["workers"])
        if key in seen:
            continue
        seen.append(key)
        s, n = by.get(key + ("spillagg",)), by.get(key + ("native",))
        if s and n:
            out.append(f"| `{r['case']}` | {r['workers']} | {float(s['median_ms']):,.0f} | {float(n['median_ms']):,.0f} "
                       f"| **{float(s['ratio_to_native']):.2f}** | {cpu_ratio(s, n)} | {float(s['vmhwm_mb']):.0f}{wmem(s)} / {float(n['vmhwm_mb']):.0f}{wmem(n)} "
                       f"| {fmt_bytes(int(s['temp_bytes']))} / {fmt_bytes(int(n['temp_bytes']))} "
                       f"| {s['answer_ok']} | {par(s)} / {par(n)} |")
        h = by.get(key + ("hll",))
        if h:
            if h["median_ms"] == "n/a":
                out.append(f"| `{r['case']}` via hll (approximate) | {r['workers']} | n/a | | | | | | n/a | |")
            else:
                out.append(f"| `{r['case']}` via hll (approximate) | {r['workers']} | {float(h['median_ms']):,.0f} "
                           f"| {float(n['median_ms']):,.0f} | {float(h['ratio_to_native']):.2f} | {cpu_ratio(h, n)} "
                           f"| {float(h['vmhwm_mb']):.0f}{wmem(h)} / {float(n['vmhwm_mb']):.0f}{wmem(n)} "
                           f"| {fmt_bytes(int(h['temp_bytes']))} / {fmt_bytes(int(n['temp_bytes']))} "
                           f"| {h['answer_ok']} | {par(h)} / {par(n)} |")
        f = by.get(key + ("floor",))
        if f:
            m = re.match(r"(.*) \((.*floor)\)$", r["case"])
            label = f"`{m.group(1)}` ({m.group(2)})" if m else f"`{r['case']}`"
            out.append(f"| {label} | {r['workers']} | {float(f['median_ms']):,.0f} | | | | "
                       f"{float(f['vmhwm_mb']):.0f}{wmem(f)} | {fmt_bytes(int(f['temp_bytes']))} | - "
                       f"| {par(f)} |")
    out.append("")
    out.append("Time: wall clock around the whole query (execute + fetch), median over the runs. "
               "CPU: median user + system CPU time of the backend and its parallel workers, as a ratio. "
               "VmHWM: peak RSS of the backend that ran the query, in MB (the parallel leader; "
               "\"(+a+b)\": VmHWM of its parallel workers, separate processes, sampled every 20 ms "
               "while they live, so a lower bound). A fresh backend weighs the \"fresh backend VmHWM\" "
               "below before any query. Temp: size of the temp files of the query, its parallel workers "
               "included. Same answer: the two queries compared in SQL (jsonb equality for maps). "
               "Parallel plan: \"partial\" = Partial Aggregate under a Gather, \"gather\" = a Gather "
               "without partial aggregation, \"serial\" = no Gather (PostgreSQL never runs "
               "count(DISTINCT) in partial mode). The full plans are in bench.tsv.")
    out.append("")
    out.append("Runs during which other processes on the host used more than "
               f"{FOREIGN_MAX} CPU cores were retried while the retry budget lasted (see raw.json: "
               "foreign_cores, contended; bench.tsv plan_note says CONTENDED where a median includes such runs). "
               "On a busy host compare the CPU ratios.")
    out.append("")
    out.append("Settings:")
    out.append("")
    for k, v in sett.items():
        out.append(f"- {k}: {v}")
    out.append(f"- rows per k: {ROWS / DISTINCT_K:g}; WORKERS = \"{' '.join(map(str, WORKERS))}\" "
               f"(max_parallel_workers_per_gather)")
    out.append(f"- data load + VACUUM ANALYZE: {LOAD_SECONDS} s; total run: {total // 60} min {total % 60} s")
    out.append("")
    return "\n".join(out)


def chart(rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cases = []
    for r in rows:
        if r["engine"] == "spillagg" and r["case"] not in cases:
            cases.append(r["case"])
    by = {(r["case"], r["workers"], r["engine"]): r for r in rows}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 0.9 * len(cases) + 2.5), sharey=True)
    n = len(WORKERS)
    height = 0.8 / n
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    for j, w in enumerate(WORKERS):
        ys = [i + (j - (n - 1) / 2) * height for i in range(len(cases))]
        vals = [float(by[(c, w, "spillagg")]["ratio_to_native"]) for c in cases]
        ax1.barh(ys, vals, height=height * 0.9, color=colors[j % 5], label=f"{w} workers")
        cpu = []
        for c in cases:
            s_, n_ = by[(c, w, "spillagg")].get("cpu_ms"), by[(c, w, "native")].get("cpu_ms")
            try:
                cpu.append(float(s_) / float(n_))
            except (TypeError, ValueError, ZeroDivisionError):
                cpu.append(float("nan"))
        ax1.plot(cpu, ys, "D", color="black", ms=4, mfc="white",
                 label="CPU time ratio (backend + workers)" if j == 0 else None)
        for y, v, c in zip(ys, vals, cpu):  # the label right of the bar and the marker
            x = max(v, c * 1.04) if c == c else v
            ax1.text(x, y, f" {v:.2f}" + (f" (CPU {c:.2f})" if c == c else ""), va="center", fontsize=7)
    ax1.axvline(1.0, color="black", lw=1)
    ax1.set_xscale("log")
    allv = [float(by[(c, w, "spillagg")]["ratio_to_native"]) for c in cases for w in WORKERS]
    for c in cases:
        for w in WORKERS:
            try:
                allv.append(float(by[(c, w, "spillagg")]["cpu_ms"]) / float(by[(c, w, "native")]["cpu_ms"]))
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                pass
    ticks = [t for t in (0.05, 0.1, 0.2, 0.5, 1, 2, 4, 8, 16)
             if min(allv) / 1.5 <= t <= max(allv) * 1.5] or [1]
    ax1.set_xticks(ticks)
    ax1.set_xticklabels([f"{t:g}" for t in ticks])
    ax1.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax1.set_xlim(min(min(allv), 1) / 1.3, max(max(allv), 1) * 2.2)
    ax1.set_xlabel("median time spillagg / native (log scale; < 1 = spillagg faster)")
    ax1.set_yticks(range(len(cases)))
    ax1.set_yticklabels(cases)
    ax1.invert_yaxis()
    ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(WORKERS) + 1, fontsize=8)
    ax1.set_title("wall time ratio spillagg / native (bars)")

    height = 0.8 / (2 * n)
    k = 0
    workers_labelled = False
    for w in WORKERS:
        for e, hatch in (("spillagg", ""), ("native", "//")):
            ys = [i + (k - (2 * n - 1) / 2) * height for i in range(len(cases))]
            vals = [float(by[(c, w, e)]["vmhwm_mb"]) for c in cases]
            extra = [by[(c, w, e)].get("_workers_mb", 0.0) for c in cases]
            ax2.barh(ys, vals, height=height * 0.9, color=colors[WORKERS.index(w) % 5],
                     alpha=1.0 if e == "spillagg" else 0.45, hatch=hatch, edgecolor="black", lw=0.3,
                     label=f"{e}, {w} workers")
            if any(extra):
                ax2.barh(ys, extra, left=vals, height=height * 0.9, color="none", hatch="..",
                         edgecolor="grey", lw=0.3,
                         label="+ its parallel workers (sampled)" if not workers_labelled else None)
                workers_labelled = True
            for y, v, x in zip(ys, vals, extra):
                ax2.text(v + x, y, f" {v:.0f}" + (f" (+{x:.0f})" if x else ""), va="center", fontsize=7)
            k += 1
    ax2.set_xlim(0, ax2.get_xlim()[1] * 1.12)
    ax2.set_xlabel("VmHWM of the backend, MB (dotted: + VmHWM of its parallel workers, sampled)")
    ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8)
    ax2.set_title("peak backend memory")
    fig.suptitle(f"spillagg vs PostgreSQL 15: {ROWS:,} rows, {DISTINCT_K:,} distinct k, {GROUPS} groups, "
                 f"spillagg.work_mem {BUDGET_KB} kB, median of {RUNS}")
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "bench.png"), dpi=110)


def replot(out):
    """Redraws bench.png and bench.md of a finished run."""
    global OUT, ROWS, DISTINCT_K, GROUPS, RUNS, BUDGET_KB, WORKERS, FOREIGN_MAX, LOAD_SECONDS
    OUT = out
    with open(os.path.join(out, "raw.json")) as fh:
        raw = json.load(fh)
    p = raw.get("params", {})
    total = p.get("total")
    if total is None:  # a run from before "params": take it from bench.md
        with open(os.path.join(out, "bench.md")) as fh:
            m = re.search(r"total run: (\d+) min (\d+) s", fh.read())
        total = int(m.group(1)) * 60 + int(m.group(2)) if m else 0
    ROWS, DISTINCT_K, GROUPS = p.get("ROWS", ROWS), p.get("DISTINCT_K", DISTINCT_K), p.get("GROUPS", GROUPS)
    RUNS, BUDGET_KB, WORKERS = p.get("RUNS", RUNS), p.get("BUDGET_KB", BUDGET_KB), p.get("WORKERS", WORKERS)
    FOREIGN_MAX, LOAD_SECONDS = p.get("FOREIGN_MAX", FOREIGN_MAX), p.get("LOAD_SECONDS", LOAD_SECONDS)
    rows = []
    with open(os.path.join(out, "bench.tsv")) as fh:
        cols = fh.readline().rstrip("\n").split("\t")
        for line in fh:
            r = dict(zip(cols, line.rstrip("\n").split("\t")))
            r["workers"] = int(r["workers"])
            m = re.search(r"workers VmHWM \(sampled\) ([0-9 +]+) MB", r["plan_note"])
            r["_workers_mb"] = sum(float(x) for x in m.group(1).split("+")) if m else 0.0
            rows.append(r)
    md = markdown(rows, raw["settings"], total)
    with open(os.path.join(out, "bench.md"), "w") as fh:
        fh.write(md)
    chart(rows)
    print(md)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--replot":
        sys.exit(replot(sys.argv[2]))
    sys.exit(main())

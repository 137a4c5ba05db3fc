"""`make bench`: our node and master daemons against the real Ganeti ones and against bare echo servers.

    python tools/bench/run_bench.py [--duration S] [--only SCENARIO] ...   (SCENARIO: one of the nine below)

Nine measurements, in one run, on this machine (client and servers share its cores):

legacy-new        POST /version on a new TLS connection per call, as Ganeti masters call
                  (the anchor's bench_noded.py --client ssl, one process per connection):
                  ours vs the real ganeti-noded 3.0, both at their defaults (memory locked).
                  Target: ours >= 5x the real one's calls/s.
legacy-keepalive  POST /version back-to-back on N persistent TLS connections (load_http.py):
                  ours vs a bare Starlette/uvicorn JSON app with the same TLS (echo_http.py).
                  Target: ours >= 70 % of the echo's calls/s.
grpc              ClusterService.Version with N calls in flight on one channel (load_grpc.py):
                  ours vs a bare grpc.aio server with the same mutual TLS (echo_grpc.py).
                  Target: ours >= 70 % of the echo's calls/s.
instances         single calls through the legacy door, each repeated --instances-repeat times:
                  instance_start / instance_shutdown with the fake hypervisor (ours and the real
                  noded) and kvm (ours only; qemu running the tiny OS), blockdev_create /
                  blockdev_remove of a 10 GiB sparse file disk (both); median and min/max
                  (tools/bench/instances.py says what each time runs until). No target.
jobs              our ganeti-masterd driven by the real-cluster anchor's bench_jobs.py (Debian's
                  Ganeti LUXI client): 200 OP_TEST_DELAY jobs (0.001 s, on the master) in one
                  SubmitManyJobs, polled until all are final -> jobs/s; single job submit->success
                  median. Baseline: the real Ganeti 3.0 master's reference figures
                  (real-cluster-notes.md, labelled "reference, not this run"), or with --jobs-real
                  (make bench-real) the real master measured in the same run (up.sh, bench_jobs.py,
                  down.sh: changes the machine's /etc/hosts, a bridge, sshd; never in CI).
                  Targets: jobs/s >= 30x, single median <= 0.1x (tools/bench/jobs.py).
config            masterd.distribution sending config.data (the reference sample's instance
                  replicated to --config-instances instances) to --config-candidates of our node
                  daemons (each its own root and 127.0.0.x address, --legacy-workers 1 --no-mlock),
                  and ssconf to all of them: full distribution and one change, median of
                  --config-repeat (tools/bench/config_dist.py). Targets: linear growth, 10,000
                  instances to 20 candidates in under 2 s.
node-list         Debian's real `gnt-node list` against our master with --node-list-nodes of our
                  nodes (our gnt-cluster init and gnt-node add --node-root, node daemons on
                  127.0.10.1-N, each its own root, cluster IP 127.0.10.100 on lo: needs root),
                  --node-list-runs runs: median wall clock, beside the same command with 1 node
                  and the CLI start-up floor (`gnt-node --version`) of this run
                  (tools/bench/node_list.py). Target: under the real master's 0.24 s for its one
                  node (real-cluster-notes.md, a reference, not this run). Skipped, with a note,
                  where root, `ip` or Debian's ganeti package is missing.
instance-list     Debian's real `gnt-instance list` (default fields: live data from one
                  all_instances_info per node) against our master with --instance-list-count
                  started fake-hypervisor instances on 3 of our nodes (node daemons on
                  127.0.13.201-203, cluster IP 127.0.13.200 on lo: needs root; instances created by
                  OP_INSTANCE_CREATE jobs through SubmitManyJobs), --instance-list-runs runs: median
                  wall clock beside the CLI start-up floor (`gnt-instance --version`)
                  (tools/bench/instance_list.py). Target: under 1 s.
instance-add      Debian's real `gnt-instance add` until the instance runs (OS installed, started),
                  fake and kvm, against our master on 3 of our nodes (127.0.18.201-203: needs
                  root), --instance-add-runs runs each, beside the CLI start-up floor
                  (tools/bench/instance_add.py). Target: fake at most a fifth of the real master's
                  1.96 s (rpc-trace.md; `make bench-real` runs the real master instead).

Each throughput point runs `--rounds` times, ours and the baseline alternating (ABBA) to
spread drift; every load has a warm-up before its measured window. Prints a
Markdown table, writes JSON to bench-results/. Exit status 1 if any call
failed or the run broke; a missed target is only marked MISSED.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for a direct run

from tools.bench import config_dist, instance_add, instance_list, instances_report, node_list, servers
from tools.bench import jobs as jobs_bench
from tools.bench import pyspy as profiling
from tools.bench.clients import BenchNoded, LoadGen
from tools.bench.instances import InstanceBench, make_node
from tools.bench.instances import Result as InstancesResult
from tools.bench.procs import BenchError, Processes
from tools.bench.report import Point, markdown, to_json
from tools.bench.servers import Certs, Server
from tools.bench.stats import Measurement, combine

REPO = servers.REPO
SCENARIOS = ("legacy-new", "legacy-keepalive", "grpc", "instances", "jobs", "config", "node-list",
             "instance-list", "instance-add")
NODE_SCENARIOS = ("legacy-new", "legacy-keepalive", "grpc", "instances")
THROUGHPUT = ("legacy-new", "legacy-keepalive", "grpc")
# shared/ lies beside the checkout (here, and in CI).
DEFAULT_ANCHORS = Path(os.environ.get("GANETI_BENCH_ANCHORS",
                                      str(REPO.parent / "shared" / "anchors" / "real-noded")))
DEFAULT_JOBS_ANCHOR = Path(os.environ.get("GANETI_BENCH_JOBS_ANCHOR",
                                          str(REPO.parent / "shared" / "anchors" / "real-cluster")))


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers, not {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 3)[3])
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (default 5)")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="seconds of unmeasured load before each keep-alive/gRPC run (default 1)")
    p.add_argument("--rounds", type=int, default=2,
                   help="runs per server and point, alternating ours and the baseline (default 2)")
    p.add_argument("--only", action="append", choices=SCENARIOS,
                   help="run only this comparison (may be repeated)")
    p.add_argument("--new-conns", type=int_list, default=[1, 8],
                   help="legacy-new concurrencies (default 1,8)")
    p.add_argument("--keepalive-conns", type=int_list, default=[8, 16, 32],
                   help="legacy-keepalive connection counts (default 8,16,32)")
    p.add_argument("--grpc-calls", type=int_list, default=[8, 16, 32],
                   help="gRPC calls in flight (default 8,16,32)")
    p.add_argument("--client-procs", type=int, default=1,
                   help="load-generator processes sharing the connections/calls (default 1)")
    p.add_argument("--legacy-client", choices=["ssl", "pycurl"], default="ssl",
                   help="bench_noded.py client for legacy-new (default ssl; pycurl = libcurl, as masters)")
    p.add_argument("--echo-workers", type=int, default=0,
                   help="processes of the Starlette echo (default 0: as many as our daemon runs for "
                        "its legacy door)")
    p.add_argument("--ours-opts", type=shlex.split, default=[], metavar="OPTIONS",
                   help="extra options for our daemon, e.g. --ours-opts='--no-mlock' (default: none)")
    p.add_argument("--grpc-echo-uvloop", action="store_true",
                   help="run the gRPC echo on uvloop like our daemon (default: grpc.aio's own asyncio loop)")
    p.add_argument("--instances-repeat", type=int, default=5, metavar="N",
                   help="measured runs of each instances row, after one warm-up (default 5)")
    p.add_argument("--kvm-shutdown-timeout", type=int, default=1, metavar="S",
                   help="instance_shutdown timeout for the kvm rows: the tiny guest has no ACPI, so the "
                        "soft stop always waits this long before qemu is killed (default 1)")
    p.add_argument("--anchors", type=Path, default=DEFAULT_ANCHORS,
                   help="folder with bench_noded.py and setup_root.py (default %(default)s)")
    p.add_argument("--jobs-n", type=int, default=200, metavar="N",
                   help="jobs: jobs in the SubmitManyJobs batch (default 200)")
    p.add_argument("--jobs-reps", type=int, default=10, metavar="R",
                   help="jobs: single submit->success round trips, median taken (default 10, as the "
                        "reference)")
    p.add_argument("--jobs-duration", type=float, default=0.001, metavar="S",
                   help="jobs: OP_TEST_DELAY duration (default 0.001)")
    p.add_argument("--jobs-rounds", type=int, default=3, metavar="K",
                   help="jobs: bench_jobs.py runs per master, alternating (default 3)")
    p.add_argument("--jobs-real", action="store_true",
                   help="jobs: also bring up the real Ganeti 3.0 master (real-cluster anchor up.sh, "
                        "down.sh afterwards) and measure it in this run; CHANGES THE MACHINE (/etc/hosts, "
                        "a bridge, sshd): on request only (make bench-real), never in CI")
    p.add_argument("--jobs-anchor", type=Path, default=DEFAULT_JOBS_ANCHOR,
                   help="folder with bench_jobs.py, up.sh, down.sh, gns (default %(default)s)")
    p.add_argument("--config-instances", type=int_list, default=[1000, 10000], metavar="N,N",
                   help="config: instances in the synthetic config.data (default 1000,10000)")
    p.add_argument("--config-candidates", type=int_list, default=[3, 20], metavar="N,N",
                   help="config: master candidates receiving it (default 3,20; at most 100)")
    p.add_argument("--config-repeat", type=int, default=5, metavar="R",
                   help="config: measured distributions per point, median taken (default 5)")
    p.add_argument("--node-list-nodes", type=int, default=20, metavar="N",
                   help="node-list: nodes in the cluster, the master included (default 20, at most 99)")
    p.add_argument("--node-list-runs", type=int, default=20, metavar="R",
                   help="node-list: measured runs of each command, median taken (default 20, as the "
                        "reference)")
    p.add_argument("--instance-list-count", type=int, default=1000, metavar="N",
                   help="instance-list: started fake instances on the 3 nodes (default 1000)")
    p.add_argument("--instance-list-runs", type=int, default=10, metavar="R",
                   help="instance-list: measured runs of each command, median taken (default 10)")
    p.add_argument("--instance-add-runs", type=int, default=5, metavar="R",
                   help="instance-add: measured gnt-instance add runs per hypervisor, median taken"
                        " (default 5)")
    p.add_argument("--out-dir", type=Path, default=REPO / "bench-results")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="record our daemon with py-spy during its measured runs into DIR and print "
                        "where its time went (adds a little sampling cost to those runs)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary roots and logs")
    return p


@dataclass
class Comparison:
    scenario: str
    baseline: str
    target: float
    points: list[int]
    measure: Callable[[Server, int, Path | None], Measurement]
    ours: Server
    base: Server


def run_point(cmp: Comparison, n: int, rounds: int, log: Callable[[str], None],
              profile_dir: Path | None) -> Point:
    ours_runs: list[Measurement] = []
    base_runs: list[Measurement] = []
    for r in range(rounds):
        order = [(cmp.ours, ours_runs), (cmp.base, base_runs)]
        if r % 2:
            order.reverse()
        for server, runs in order:
            spy_file = None
            if profile_dir is not None and server is cmp.ours:
                spy_file = profile_dir / f"{cmp.scenario}-{n}-{r + 1}.txt"
            m = cmp.measure(server, n, spy_file)
            runs.append(m)
            log(f"  {cmp.scenario} n={n} round {r + 1} {server.name}: {m.calls_per_s:.1f} calls/s, "
                f"{m.errors} errors")
    return Point(cmp.scenario, n, cmp.baseline, cmp.target, combine(ours_runs), combine(base_runs))


def build_comparisons(args: argparse.Namespace, procs: Processes, certs: Certs, tmp: Path,
                      chosen: list[str]) -> tuple[list[Comparison], Server, Server | None]:
    """Start our daemon and the baselines the chosen comparisons need; say how to measure each.

    Returns the throughput comparisons, our legacy door and the real noded (when one is needed).
    """
    ours_legacy, ours_grpc = servers.start_ours(procs, certs, grpc="grpc" in chosen, extra=args.ours_opts)
    real: Server | None = None
    if "legacy-new" in chosen or "instances" in chosen:
        real = servers.start_real(procs, certs, tmp, args.anchors)
    comparisons: list[Comparison] = []
    if "legacy-new" in chosen and real is not None:
        bn = BenchNoded(args.anchors / "bench_noded.py", client=args.legacy_client)
        counter = iter(range(1_000_000))
        for server in (ours_legacy, real):  # warm-up: bytecode, caches, first forks
            bn.run(procs, server, certs, 1, 1.0, tmp / f"warmup-{server.name}.json")
        comparisons.append(Comparison(
            "legacy-new", "real noded", 5.0, args.new_conns,
            lambda s, n, spy: bn.run(procs, s, certs, n, args.duration,
                                     tmp / f"bn-{s.name}-{n}-{next(counter)}.json", spy),
            ours_legacy, real))
    if "legacy-keepalive" in chosen:
        workers = args.echo_workers or ours_legacy.processes
        echo_http = servers.start_echo(procs, certs, "http", ["--workers", str(workers)], workers)
        lg_http = LoadGen("http", args.client_procs, args.warmup)
        comparisons.append(Comparison(
            "legacy-keepalive", "echo (Starlette)", 0.7, args.keepalive_conns,
            lambda s, n, spy: lg_http.run(procs, s, certs, n, args.duration, spy), ours_legacy, echo_http))
    if "grpc" in chosen:
        echo_grpc = servers.start_echo(procs, certs, "grpc", ["--uvloop"] if args.grpc_echo_uvloop else [])
        lg_grpc = LoadGen("grpc", args.client_procs, args.warmup)
        comparisons.append(Comparison(
            "grpc", "echo (grpc.aio)", 0.7, args.grpc_calls,
            lambda s, n, spy: lg_grpc.run(procs, s, certs, n, args.duration, spy), ours_grpc, echo_grpc))
    return comparisons, ours_legacy, real


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    chosen: list[str] = args.only or list(SCENARIOS)
    if "legacy-new" in chosen and not (args.anchors / "bench_noded.py").exists():
        print(f"run_bench: {args.anchors / 'bench_noded.py'} not found; pass --anchors DIR", file=sys.stderr)
        return 2
    if min(args.jobs_n, args.jobs_reps, args.jobs_rounds) < 1 or args.jobs_duration <= 0:
        print("run_bench: --jobs-n, --jobs-reps and --jobs-rounds must be at least 1, --jobs-duration "
              "above 0", file=sys.stderr)
        return 2
    if args.instances_repeat < 1 or args.kvm_shutdown_timeout < 0:
        print("run_bench: --instances-repeat must be at least 1 and --kvm-shutdown-timeout not negative",
              file=sys.stderr)
        return 2
    if args.config_repeat < 1 or max(args.config_candidates) > 100:
        print("run_bench: --config-repeat must be at least 1 and --config-candidates at most 100",
              file=sys.stderr)
        return 2
    if args.profile is not None:
        if profiling.py_spy() is None:
            print("run_bench: --profile needs py-spy (.venv/bin/pip install py-spy)", file=sys.stderr)
            return 2
        args.profile.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="ganeti-bench-"))
    points: list[Point] = []
    inst_result: InstancesResult | None = None
    jobs_result: jobs_bench.JobsResult | None = None
    config_result: config_dist.Result | None = None
    node_list_result: node_list.Result | None = None
    instance_list_result: instance_list.Result | None = None
    instance_add_result: instance_add.AddResult | None = None
    processes: dict[str, dict[str, int]] = {}
    failure: str | None = None
    started = time.time()
    try:
        with Processes(tmp) as procs:  # every process started is stopped by PID on the way out
            comparisons: list[Comparison] = []
            real: Server | None = None
            if any(s in chosen for s in NODE_SCENARIOS):
                certs = servers.make_certs(tmp)
                comparisons, ours_legacy, real = build_comparisons(args, procs, certs, tmp, chosen)
            for cmp in comparisons:
                log(f"{cmp.scenario}: ours (pid {cmp.ours.pid}, {cmp.ours.processes} process(es)) vs "
                    f"{cmp.baseline} (pid {cmp.base.pid}, {cmp.base.processes} process(es))")
                processes[cmp.scenario] = {"ours": cmp.ours.processes, "baseline": cmp.base.processes}
                for n in cmp.points:
                    points.append(run_point(cmp, n, args.rounds, log, args.profile))
            if "instances" in chosen and real is not None:
                log(f"instances: ours (pid {ours_legacy.pid}) vs real noded (pid {real.pid})")
                inst_result = InstanceBench(make_node(ours_legacy, certs), make_node(real, certs),
                                            args.instances_repeat, args.kvm_shutdown_timeout, log).run()
            if "jobs" in chosen:
                jsettings = jobs_bench.JobsSettings(args.jobs_n, args.jobs_reps, args.jobs_duration,
                                                    args.jobs_rounds, args.jobs_real)
                bench = jobs_bench.JobsBench(jsettings, args.jobs_anchor, tmp, log, args.profile)
                jobs_result = bench.result
                bench.run(procs)
            if "config" in chosen:
                csettings = config_dist.Settings(args.config_instances, args.config_candidates,
                                                 args.config_repeat)
                config_bench = config_dist.ConfigBench(csettings, tmp, log)
                config_result = config_bench.result
                config_bench.run(procs)
            if "node-list" in chosen:
                nl_settings = node_list.Settings(args.node_list_nodes, args.node_list_runs)
                nl_bench = node_list.NodeListBench(nl_settings, log)
                node_list_result = nl_bench.result
                nl_bench.run()
            if "instance-list" in chosen:
                il_bench = instance_list.InstanceListBench(
                    instance_list.Settings(args.instance_list_count, args.instance_list_runs), log)
                instance_list_result = il_bench.result
                il_bench.run()
            if "instance-add" in chosen:
                ia_settings = instance_list.Settings(1, args.instance_add_runs)  # one instance at a time
                ia_bench = instance_add.InstanceAddBench(ia_settings, log)
                instance_add_result = ia_bench.add_result
                ia_bench.run()
    except Exception as err:  # report what was measured, then fail
        failure = str(err)
        log(f"run_bench: {err}")
        if not isinstance(err, BenchError):
            log(traceback.format_exc())
    finally:
        if args.keep_tmp or failure is not None:
            log(f"run_bench: logs and roots kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    settings = {"duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
                "client_procs": args.client_procs, "legacy_client": args.legacy_client,
                "grpc_echo_uvloop": args.grpc_echo_uvloop, "scenarios": chosen,
                "ours_options": args.ours_opts, "server_processes": processes,
                "profiled": args.profile is not None, "instances_repeat": args.instances_repeat,
                "kvm_shutdown_timeout_s": args.kvm_shutdown_timeout}
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))}
    if any(s in chosen for s in THROUGHPUT):
        print(markdown(points, settings, machine))
    if inst_result is not None:
        print(("\n" if any(s in chosen for s in THROUGHPUT) else "")
              + instances_report.markdown(inst_result, str(machine["started"])))
    if jobs_result is not None and (jobs_result.ours or jobs_result.real):
        print(("\n" if any(s in NODE_SCENARIOS for s in chosen) else "")
              + jobs_bench.markdown(jobs_result, str(machine["started"])))
    if config_result is not None and config_result.rows:
        print(("\n" if any(s != "config" for s in chosen) else "")
              + config_dist.markdown(config_result, str(machine["started"])))
    if node_list_result is not None and node_list_result.skipped is not None:
        print(f"\nnode-list: skipped: {node_list_result.skipped}")
    elif node_list_result is not None and (node_list_result.many_s or node_list_result.one_s):
        print(("\n" if any(s != "node-list" for s in chosen) else "")
              + node_list.markdown(node_list_result, str(machine["started"])))
    if instance_list_result is not None and instance_list_result.list_s:
        print(("\n" if any(s != "instance-list" for s in chosen) else "")
              + instance_list.markdown(instance_list_result, str(machine["started"])))
    if instance_add_result is not None and instance_add_result.add_s:
        print(("\n" if any(s != "instance-add" for s in chosen) else "")
              + instance_add.markdown(instance_add_result, str(machine["started"])))
    if args.profile is not None:
        print_profiles(args.profile, chosen)
    if points or inst_result is not None or jobs_result is not None or config_result is not None \
            or node_list_result is not None or instance_list_result is not None \
            or instance_add_result is not None or failure:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        out = args.out_dir / f"bench-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.json"
        data = to_json(points, settings, machine, failure)
        if inst_result is not None:
            data["instances"] = {"notes": inst_result.notes, "rows": [r.summary() for r in inst_result.rows]}
        if jobs_result is not None and (jobs_result.ours or jobs_result.real):
            data["jobs"] = jobs_result.summary()
        if config_result is not None and config_result.rows:
            data["config"] = config_result.summary()
        if node_list_result is not None:
            data["node_list"] = node_list_result.summary()
        if instance_list_result is not None:
            data["instance_list"] = instance_list_result.summary()
        if instance_add_result is not None:
            data["instance_add"] = instance_add_result.summary()
        out.write_text(json.dumps(data, indent=2) + "\n")
        log(f"run_bench: results written to {out}")
    errors = sum(p.ours.errors + p.base.errors for p in points)
    errors += inst_result.errors if inst_result is not None else 0
    errors += jobs_result.errors if jobs_result is not None else 0
    errors += config_result.errors if config_result is not None else 0
    errors += node_list_result.errors if node_list_result is not None else 0
    errors += instance_list_result.errors if instance_list_result is not None else 0
    errors += instance_add_result.errors if instance_add_result is not None else 0
    if errors:
        log(f"run_bench: {errors} calls failed")
    return 1 if failure is not None or errors else 0


def print_profiles(directory: Path, chosen: list[str]) -> None:
    for scenario in chosen:
        files = sorted(directory.glob(f"{scenario}-*.txt"))
        if files:
            print(f"\n### Where our daemon spent its time: {scenario} (py-spy, {len(files)} runs)\n")
            print("```\n" + profiling.summarise(files) + "\n```")


if __name__ == "__main__":
    raise SystemExit(main())

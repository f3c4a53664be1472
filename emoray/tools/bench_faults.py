"""`emoray bench faults`: the fault campaign at cluster shape, on one machine.

A real multi-node Ray cluster (`ray.cluster_utils.Cluster`: a head and two worker nodes offering
the `engine_node` resource, which the engine actors ask for, so they run on the workers), S3 on
127.0.0.1, annotate into the Delta table:

1. a clean run (no faults) for the wall time without them;
2. the same input into a fresh table through the flaky store (`emoray.tools.flaky_s3`), with the
   worker node holding the engine actor removed (killed, as a lost spot node) once half the
   prompts are answered: Ray restarts the engine on the other worker and the run finishes;
3. the same input into another table, both workers removed at half: the run fails with its
   message once no node can host an engine for `engine_wait_s`; two fresh workers join and the
   run is made again, completing the table;
4. missing and duplicate input row x task pairs of both tables, counted from the tables read
   straight from the endpoint.
"""

from __future__ import annotations

import resource
import threading
import time

from emoray.lake import locations, table
from emoray.config import AnnotateConfig, EngineConfig, S3Config
from emoray.contract import Stage
from emoray.tools.flaky_s3 import KINDS, Faults, flaky_proxy
from emoray.runtime import configure_ray_data
from emoray.tasks import resolve

ENGINE_NODE = "engine_node"
"""The custom resource the worker nodes offer and the engine actors ask for."""


def _add_workers(cluster, count: int, object_store_mib: int = 512) -> list:
    nodes = [cluster.add_node(num_cpus=1, resources={ENGINE_NODE: 1},
                              object_store_memory=object_store_mib << 20) for _ in range(count)]
    cluster.wait_for_nodes()
    return nodes


def start_cluster(workers: int = 2, object_store_mib: int = 512):
    """A head (the driver's node: one CPU, no engine) and `workers` nodes of one CPU each
    offering `ENGINE_NODE`; this process joins it. Returns the cluster and its worker nodes."""
    import ray
    from ray._common.utils import reset_ray_address
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": object_store_mib << 20,
        "include_dashboard": False,
        # a killed node is declared dead after 3 missed 1 s health checks (default 5 x 3 s)
        "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}})
    # Cluster writes its address to Ray's machine-wide `ray_current_cluster` file ("for unit
    # testing"), where any `ray.init()` without an address on this machine would attach to this
    # cluster while it runs, or to its corpse should this process die; this process connects by
    # its explicit address, so the file is removed at once.
    reset_ray_address()
    ray.init(address=cluster.address, log_to_driver=False)  # before the workers: on the head
    configure_ray_data()
    return cluster, _add_workers(cluster, workers, object_store_mib)


class NodeKiller(threading.Thread):
    """Once run `run_id`'s stats report `prompts` prompts answered, kill the worker node of
    its engine actor (`every`: all of `nodes`), as a lost spot node."""

    def __init__(self, cluster, nodes: list, run_id: str, prompts: int, every: bool = False):
        super().__init__(daemon=True, name="emoray-node-killer")
        self.cluster, self.nodes, self.run_id, self.prompts = cluster, nodes, run_id, prompts
        self.every, self.done, self.removed = every, threading.Event(), []

    def run(self) -> None:
        import ray

        while not self.done.is_set():
            try:
                stats = ray.get_actor(f"emoray-stats-{self.run_id}")
                counts, clocks = ray.get([stats.get.remote(), stats.engine_clocks.remote()],
                                         timeout=10)
            except Exception:  # the run has not started its stats actor yet
                counts, clocks = {}, {}
            if counts.get("prompts", 0) >= self.prompts:
                break
            self.done.wait(0.2)
        else:
            return
        hosts = {c.get("node") for c in clocks.values()}
        victims = self.nodes if self.every else [
            next((n for n in self.nodes if n.node_id in hosts), self.nodes[0])]
        for node in victims:
            self.cluster.remove_node(node, allow_graceful=False)
            self.removed.append({"node": node.node_id[:12],
                                 "after_prompts": counts.get("prompts", 0)})


def _report(uri: str, run_id: str) -> dict:
    return next((r for r in table.run_reports(table.AnnotationTable(uri))
                 if r.get("run_id") == run_id), {})


def _attempt(config: AnnotateConfig, engine_stage: Stage) -> dict:
    """One run; its figures, or how it failed."""
    from emoray.pipeline import Annotator

    try:
        summary = Annotator(config, engine=engine_stage).run()
    except Exception as e:  # a failed night: say how; the campaign runs it again
        return {"run_id": config.run_id, "error": f"{type(e).__name__}: {e}"[:600]}
    return {"run_id": config.run_id, "rows_out": summary.rows_out, "retries": summary.retries,
            "engine_starts": _report(config.output, config.run_id).get("engine_starts")}


def run_campaign(engine: EngineConfig, rows: int, tasks: list[str], engine_stage: Stage,
                 root: str, batch_size: int = 64, commit_rows: int = 1000,
                 faults: Faults = Faults(), engine_wait_s: float = 10) -> dict:
    """The campaign of the module doc on `rows` input rows; `root` is an s3:// prefix on the
    endpoint the process's AWS environment points at."""
    import os

    import ray

    from emoray.tools.bench import bench_texts

    src = f"{root}/faults-in"
    locations.write_texts(src, S3Config(), [f"r{i}" for i in range(rows)], bench_texts(rows))
    engine = engine.model_copy(update={"node_resources": {ENGINE_NODE: 1}})
    pairs = rows * len(resolve(tasks))

    def config(out: str, run_id: str, s3: S3Config) -> AnnotateConfig:
        return AnnotateConfig(input=src, output=out, tasks=tasks, engine=engine, s3=s3,
                              batch_size=batch_size, commit_rows=commit_rows, run_id=run_id,
                              engine_wait_s=engine_wait_s)

    cluster, nodes = start_cluster()
    try:
        t0 = time.perf_counter()
        clean = _attempt(config(f"{root}/faults-clean", "clean", S3Config()), engine_stage)
        clean_s = time.perf_counter() - t0

        lost_one, lost_all = f"{root}/faults-node", f"{root}/faults-nodes"
        with flaky_proxy(os.environ["AWS_ENDPOINT_URL"], faults) as (url, tally):
            s3 = S3Config(endpoint_url=url)
            killer = NodeKiller(cluster, nodes, "one-node", pairs // 2)
            killer.start()
            t0 = time.perf_counter()
            one = [_attempt(config(lost_one, "one-node", s3), engine_stage)]
            faulted_s = time.perf_counter() - t0
            killer.done.set()
            removed = list(killer.removed)

            nodes = [n for n in nodes if n.node_id[:12] not in {r["node"] for r in removed}]
            nodes += _add_workers(cluster, 2 - len(nodes))
            killer = NodeKiller(cluster, nodes, "all-nodes", pairs // 2, every=True)
            killer.start()
            every = [_attempt(config(lost_all, "all-nodes", s3), engine_stage)]
            killer.done.set()
            removed += killer.removed
            before_rerun = table.pair_counts(table.AnnotationTable(lost_all), pairs)
            _add_workers(cluster, 2)  # the failed run's execution ends at its next batch
            every.append(_attempt(config(lost_all, "all-nodes-rerun", s3), engine_stage))
            injected = tally()
    finally:
        ray.shutdown()  # first: the cluster refuses to remove the node a driver is connected to
        cluster.shutdown()
    tables = {name: table.pair_counts(table.AnnotationTable(uri), pairs)
              for name, uri in (("one node lost", lost_one), ("all nodes lost", lost_all))}
    return {
        "rows_in": rows, "pairs": pairs, "clean": clean, "one_node": one, "all_nodes": every,
        "visible_after_failure": before_rerun, "node_removed": removed, "injected": injected,
        "tables": tables,
        "peak_driver_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "wall_s": {"clean": round(clean_s, 1), "faulted": round(faulted_s, 1)},
        "missing": sum(t["missing"] for t in tables.values()),
        "duplicates": sum(t["duplicates"] for t in tables.values()),
    }


def _attempt_line(a: dict) -> str:
    if "error" in a:
        return f"  run {a['run_id']}: failed: {a['error']}"
    return (f"  run {a['run_id']}: {a['rows_out']} rows committed, engine actors started "
            f"{a['engine_starts']}")


def render(result: dict) -> str:
    retried: dict[str, int] = {f"injected {k}": result["injected"][k] for k in KINDS
                               if result["injected"][k]}
    for a in result["one_node"] + result["all_nodes"]:
        for k, v in (a.get("retries") or {}).items():
            retried[k] = retried.get(k, 0) + v
    visible = result["visible_after_failure"]
    lines = [f"rows in {result['rows_in']} ({result['pairs']} row x task pairs)"]
    for name, runs in (("one worker node lost", result["one_node"]),
                       ("both worker nodes lost", result["all_nodes"])):
        lines.append(f"{name}:")
        lines += [_attempt_line(a) for a in runs]
    lines += [f"  visible after the failed run: {visible['rows']} rows, "
              f"{visible['duplicates']} duplicates"]
    for r in result["node_removed"]:
        lines.append(f"worker node {r['node']} removed after {r['after_prompts']} prompts")
    lines += ["rows committed: " + ", ".join(f"{name} {t['rows']}" for name, t in
                                               result["tables"].items()),
              f"retries by kind: {', '.join(f'{k} {v}' for k, v in retried.items()) or '-'} "
              f"(of {result['injected']['requests']} requests through the proxy)",
              f"peak driver RSS {result['peak_driver_rss_mib']} MiB",
              f"wall time: {result['wall_s']['clean']} s without faults, "
              f"{result['wall_s']['faulted']} s with them (one node lost)",
              f"missing {result['missing']}, duplicates {result['duplicates']}"]
    return "\n".join(lines)


def main_campaign(engine: EngineConfig, rows: int, tasks: list[str], noop: bool,
                  batch_size: int, commit_rows: int, as_json: bool) -> None:
    """`emoray bench faults`: the campaign against S3 on 127.0.0.1 (its own), printed."""
    import json

    from emoray.tools.bench import NOOP_ENGINE
    from emoray.engines.stage import ENGINE
    from emoray.tools.local_s3 import local_s3

    with local_s3("emoray-bench"):
        result = run_campaign(engine, rows, tasks, NOOP_ENGINE if noop else ENGINE,
                              "s3://emoray-bench", batch_size, commit_rows)
    print(json.dumps(result) if as_json else render(result))

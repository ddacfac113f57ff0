"""workers.metrics in multiprocess mode, in a fresh interpreter (it sets process-wide state):
figures recorded by forked children reach the parent's endpoint and add up, figures recorded
before the switch are dropped instead of breaking it, and stale files of an earlier run do not
count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, os, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
from workers import metrics

folder, port = sys.argv[1], int(sys.argv[2])
metrics.record_rerouted(100)             # before the switch: in memory, dropped
metrics.enable_multiprocess(folder)
metrics.record_rerouted(1)               # the parent
children = []
for n in (2, 3):
    pid = os.fork()
    if pid == 0:
        metrics.record_rerouted(n)
        metrics.set_queue_depths("early", [n, 0])
        metrics.record_failure("ingest", ValueError("boom /secret/path"))
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
metrics.mark_process_dead(children[0])   # its live gauge goes, its counters stay
server = metrics.start_metrics_server(port, addr="127.0.0.1")
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
server.shutdown()
out = {}
for fam in text_string_to_metric_families(text):
    for s in fam.samples:
        out[s.name + json.dumps(s.labels, sort_keys=True)] = s.value
print(json.dumps(out))
"""


def run(folder: Path, port: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), str(port)],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_children_add_up_at_the_parents_endpoint(tmp_path: Path, free_port) -> None:
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"stale file of an earlier run")
    out = run(folder, free_port())
    assert out['doctriage_pages_rerouted_total{}'] == 1 + 2 + 3
    assert out['doctriage_failures_total{"reason": "ValueError", "where": "ingest"}'] == 2
    # livesum over live processes: the child marked dead no longer counts.
    assert out['doctriage_stage_queue_depth{"batcher": "early", "stage": "0"}'] == 3
    assert not (folder / "counter_999999.db").exists()

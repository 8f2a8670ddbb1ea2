"""``nerft predict --ray`` on a real Ray cluster of two nodes on loopback (``ray start --head`` and a second
``ray start --address``: separate processes, not a local instance), one of them killed mid-run: the job finishes,
every input's output is complete, with no document missing or twice. Marked ``ray_cluster`` (about a minute: two
Ray nodes and two actors start); ``.ci/run`` runs it, ``python -m pytest -m ray_cluster`` here. Skips, saying why,
without Ray or when its nodes cannot start."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_models import shared_run_dir
from test_ray_engine import rows_of

from nerft.inference.loading import load_predictor
from nerft.predict.files import predict_file

pytestmark = pytest.mark.ray_cluster

TEXTS = ["北京是中国的首都。", "张三在上海工作，他喜欢华为公司。", "今天天气不错", "联合国秘书长访问了巴黎和伦敦。", "马克龙在巴黎。"]
SHARDS, PER_SHARD = 8, 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    return subprocess.run([ray_cli, *args], env=env, capture_output=True, text=True, timeout=120)


def _worker_processes(port: int) -> list[int]:
    """The processes of the node whose raylet listens on ``port`` (its raylet and the workers it started)."""
    import psutil

    raylets = [p for p in psutil.process_iter(["cmdline"])
               if any(f"--node_manager_port={port}" in part for part in (p.info["cmdline"] or []))]
    found = {p.pid for p in raylets}
    for raylet in raylets:
        found |= {c.pid for c in raylet.children(recursive=True)}
    return sorted(found)


@pytest.fixture
def cluster(tmp_path):
    """A head node (2 CPUs) and a worker node (1 CPU) on 127.0.0.1; yields (address, the worker's raylet port)."""
    pytest.importorskip("ray", reason="ray is not installed (pip install 'nerft[ray]')")
    pytest.importorskip("psutil", reason="psutil is not installed (Ray's own dependency)")
    # loopback only: token authentication off (with a token file in ~/.ray, which a local ray.init writes, Ray
    # 2.60's nodes asked the CLI for a token it did not send)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    port, worker_port = _free_port(), _free_port()
    address = f"127.0.0.1:{port}"
    head = _ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                "--include-dashboard", "false", "--disable-usage-stats", env=env)
    if head.returncode != 0:
        pytest.skip(f"Ray's head node did not start here: {(head.stderr or head.stdout).strip()[-300:]}")
    try:
        worker = _ray("start", "--address", address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                      "--node-manager-port", str(worker_port), env=env)
        if worker.returncode != 0:
            pytest.skip(f"Ray's second node did not start here: {(worker.stderr or worker.stdout).strip()[-300:]}")
        yield address, worker_port, env
    finally:
        _ray("stop", "--force", env=env)


def test_a_node_killed_mid_run_loses_no_document(cluster, tiny_tokenizer, tmp_path):
    address, worker_port, env = cluster
    run = shared_run_dir(tiny_tokenizer)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k in range(SHARDS):
        (corpus / f"part-{k}.txt").write_text("".join(f"{TEXTS[(k + i) % len(TEXTS)]}{i}\n" for i in range(PER_SHARD)),
                                              encoding="utf-8")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "nerft", "predict", "--ray", "--ray.address", address, "--ray.actors", "2",
               "--model", str(run), "--device", "cpu", "--input", str(corpus), "--output", str(out),
               "--batch-size", "2", "--max-new-tokens", "16", "--no-progress"]
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (out.is_dir() and list(out.glob("*.jsonl"))):  # the first shard written: the run is under way
            assert job.poll() is None, job.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no shard written in 240 s"
            time.sleep(0.05)
        written_before = len(list(out.glob("*.jsonl")))
        victims = _worker_processes(worker_port)
        assert victims, "the worker node's raylet was not found"
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):  # a worker that exited with its raylet
                os.kill(pid, signal.SIGKILL)
        output, _ = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, output[-3000:]
    assert written_before < SHARDS, "the run was over before the node died: nothing was tested"
    single = load_predictor(run, device="cpu", max_new_tokens=16)
    for k in range(SHARDS):
        want = tmp_path / f"single-{k}.jsonl"
        predict_file(single, corpus / f"part-{k}.txt", want, progress=False)
        got = rows_of(out / f"part-{k}.jsonl")
        assert [r["id"] for r in got] == [str(i) for i in range(1, PER_SHARD + 1)]  # none missing, none twice
        assert got == rows_of(want), k
    assert not [p.name for p in out.iterdir() if not p.name.endswith(".jsonl")]  # no temporary file left
    assert json.loads((out / "part-0.jsonl").read_text(encoding="utf-8").splitlines()[0])["text"] == f"{TEXTS[0]}0"

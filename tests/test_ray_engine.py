"""``nerft predict --engine ray`` on a local Ray cluster with the tiny model: the same rows as single-process
``predict`` on the same inputs, one output file per input shard, resumed by shard. The cluster tests skip when Ray
is not installed (``pip install 'nerft[ray]'``); the shard planning and actor arguments are checked without it."""

import json
import sys

import pytest
from helpers_models import shared_run_dir

from nerft import cli
from nerft.inference.loading import load_predictor
from nerft.inference.options import LoadOptions, PredictOptions, VllmOptions
from nerft.predict.files import predict_file
from nerft.predict.ray_engine import RayOptions, actor_arguments, input_files, plan_shards, predict_shards
from nerft.schema import NerftError

TEXTS = ["北京是中国的首都。", "张三在上海工作，他喜欢华为公司。", "今天天气不错", "联合国秘书长访问了巴黎和伦敦，会见了马克龙。",
         "马克龙在巴黎。"]
DECODING = {"constrained": True, "window": 12, "window_overlap": 0}  # entities from the random model, windows


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'nerft[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 1024**2)
    yield ray
    ray.shutdown()


def make_corpus(folder):
    """Three shards: a .txt with a blank line, a .jsonl with its own ids, a one-line .txt."""
    folder.mkdir()
    (folder / "a.txt").write_text(f"{TEXTS[0]}\n\n{TEXTS[1]}\n{TEXTS[2]}\n", encoding="utf-8")
    (folder / "b.jsonl").write_text("".join(json.dumps({"id": f"doc-{k}", "text": t}, ensure_ascii=False) + "\n"
                                            for k, t in enumerate(TEXTS[2:])), encoding="utf-8")
    (folder / "c.txt").write_text(TEXTS[4] + "\n", encoding="utf-8")
    return folder


def rows_of(path):
    """The rows of a prediction file, scores to 4 decimals (batches of another composition move the last bits)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        for e in row["entities"]:
            e["score"] = round(e["score"], 4) if e["score"] is not None else None
    return rows


# ~25 s on 2 cores (Ray's start ~8 s, two actors importing torch), ~55 s when other jobs load the machine
def test_ray_predicts_what_one_process_predicts_and_resumes_by_shard(local_ray, tiny_tokenizer, tmp_path):
    run = shared_run_dir(tiny_tokenizer)
    corpus = make_corpus(tmp_path / "corpus")
    single = load_predictor(run, device="cpu", **DECODING)
    for name in ("a", "b", "c"):
        predict_file(single, next(corpus.glob(f"{name}.*")), tmp_path / f"single-{name}.jsonl", raw=True,
                     progress=False)
    # an earlier run finished shard c (its output is final: the Ray run must leave it alone) and was cut while
    # writing shard b (a stale temporary file, which is no output)
    out = tmp_path / "out"
    out.mkdir()
    (out / "c.jsonl").write_text((tmp_path / "single-c.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    finished = (out / "c.jsonl").stat().st_mtime_ns
    (out / ".b.jsonl.x1y2.tmp").write_text('{"id": "torn', encoding="utf-8")

    assert cli.main(["predict", "--engine", "ray", "--model", str(run), "--device", "cpu", "--input",
                     str(corpus / "*"), "--output", str(out), "--raw", "--constrained", "--window", "12",
                     "--window-overlap", "0", "--batch-size", "2", "--ray.actors", "2", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".b.jsonl.x1y2.tmp", "a.jsonl", "b.jsonl", "c.jsonl"]
    assert (out / "c.jsonl").stat().st_mtime_ns == finished
    for name in ("a", "b"):
        assert rows_of(out / f"{name}.jsonl") == rows_of(tmp_path / f"single-{name}.jsonl"), name
    rows = rows_of(out / "a.jsonl") + rows_of(out / "b.jsonl")
    assert [r["id"] for r in rows] == ["1", "3", "4", "doc-0", "doc-1", "doc-2"]  # line numbers, own ids
    assert sum(len(r["entities"]) for r in rows) >= 5 and all(r["output"] for r in rows)
    # everything finished: nothing to do, and Ray is not even needed for that
    load = LoadOptions(model=str(run), device="cpu")
    assert predict_shards(load, PredictOptions(**DECODING), [str(corpus)], out, progress=False) == (0, 0)


def test_actors_get_the_whole_load_options_and_gpus_for_vllm():
    vllm = LoadOptions(model="run", backend="vllm", vllm=VllmOptions(tensor_parallel_size=2, max_model_len=1024,
                                                                     gpu_memory_utilization=0.8))
    options = PredictOptions(batch_size=64)
    args = actor_arguments(vllm, options, RayOptions(), labels=["PER"], raw=True)
    assert (args["num_gpus"], args["num_cpus"]) == (2, 1.0)  # one actor holds its tensor-parallel GPUs
    built = args["fn_constructor_kwargs"]
    assert built["load"].vllm == VllmOptions(tensor_parallel_size=2, max_model_len=1024, gpu_memory_utilization=0.8)
    assert built["options"] is options and built["labels"] == ["PER"] and built["raw"] is True
    assert built["threads"] is None  # vLLM on a GPU: torch threads are not ours to set
    cpu = actor_arguments(LoadOptions(model="run"), options, RayOptions(cpus_per_actor=3))
    assert (cpu["num_gpus"], cpu["num_cpus"], cpu["fn_constructor_kwargs"]["threads"]) == (0, 3, 3)
    gpu = actor_arguments(LoadOptions(model="run"), options, RayOptions(gpus_per_actor=1))
    assert (gpu["num_gpus"], gpu["fn_constructor_kwargs"]["threads"]) == (1, None)


def test_cpu_engine_actors_run_as_many_engine_threads_as_cores():
    options = PredictOptions()
    ct2 = LoadOptions(model="export", backend="ct2")
    built = actor_arguments(ct2, options, RayOptions(cpus_per_actor=2))["fn_constructor_kwargs"]
    assert built["load"].ct2.threads == 2 and built["threads"] is None
    assert ct2.ct2.threads == 0  # the caller's options are left as they were
    llama = LoadOptions(model="export", backend="llamacpp")
    llama.llamacpp.threads = 4  # set by the user: kept
    assert actor_arguments(llama, options, RayOptions(cpus_per_actor=2))["fn_constructor_kwargs"]["load"] \
        .llamacpp.threads == 4
    unset = LoadOptions(model="export", backend="llamacpp")
    assert actor_arguments(unset, options, RayOptions(cpus_per_actor=3))["fn_constructor_kwargs"]["load"] \
        .llamacpp.threads == 3


def test_shard_planning(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    (corpus / "notes.md").write_text("not an input")
    assert [p.name for p in input_files([str(corpus)])] == ["a.txt", "b.jsonl", "c.txt"]
    assert [p.name for p in input_files([str(corpus / "*.txt"), str(corpus / "a.txt")])] == ["a.txt", "c.txt"]
    shards = plan_shards(input_files([str(corpus)]), tmp_path / "out")
    assert [s.output for s in shards] == [tmp_path / "out" / f"{n}.jsonl" for n in "abc"]
    (corpus / "a.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(NerftError, match="would both be written to"):
        plan_shards(input_files([str(corpus)]), tmp_path / "out")
    with pytest.raises(NerftError, match="no .txt or .jsonl file matches"):
        input_files([str(tmp_path / "nothing-*.txt")])
    with pytest.raises(NerftError, match="is a file"):
        plan_shards([corpus / "c.txt"], corpus / "a.txt")


def test_missing_ray_is_one_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(NerftError, match=r"pip install 'nerft\[ray\]'"):
        predict_shards(LoadOptions(model="run"), PredictOptions(), [str(tmp_path)], tmp_path / "out")

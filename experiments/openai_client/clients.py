"""Time nerft's OpenAI client against the openai SDK: python clients.py nerft|sdk N PORT (see run.sh)."""
import json
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

N, CONC, PORT = int(sys.argv[2]), 8, int(sys.argv[3])
URL = f"http://127.0.0.1:{PORT}/v1"
msgs = [[{"role": "user", "content": f"张三来了{i}"}] for i in range(N)]


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_nerft():
    from nerft.inference.openai_backend import OpenAIEngine
    eng = OpenAIEngine(URL, "fake", concurrency=CONC, retries=4, backoff_s=0.0)
    out = eng.generate(msgs, [32] * N)
    return [(g.text, round(sum(g.logprobs), 4)) for g in out]


def run_sdk():
    import openai
    client = openai.OpenAI(base_url=URL, api_key="x", max_retries=4)

    def one(m):
        r = client.chat.completions.create(model="fake", messages=m, temperature=0, max_tokens=32, logprobs=True)
        c = r.choices[0]
        return c.message.content, round(sum(t.logprob for t in c.logprobs.content), 4)
    with ThreadPoolExecutor(CONC) as pool:
        return list(pool.map(one, msgs))


which = sys.argv[1]
t0, c0 = time.perf_counter(), cpu()
out = run_nerft() if which == "nerft" else run_sdk()
wall, used = time.perf_counter() - t0, cpu() - c0
assert len(out) == N and all(o == out[0] for o in out), out[:3]
print(json.dumps({"client": which, "requests": N, "wall_s": round(wall, 2), "req_per_s": round(N / wall, 1),
                  "client_cpu_ms_per_req": round(1000 * used / N, 3), "answer": out[0]}))

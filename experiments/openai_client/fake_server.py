"""A fake OpenAI-compatible chat server: a fixed answer with token log-probabilities; every 10th request fails once
with 503 (Retry-After: 0) so both clients' retries are exercised."""
import sys

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

app = FastAPI()
seen: set[str] = set()
FAIL = len(sys.argv) > 2 and sys.argv[2] == 'fail'
TOKENS = [("人名", -0.01), (":", -0.001), ("张三", -0.05)]


@app.get("/v1/models")
def models():
    return {"object": "list", "data": [{"id": "fake", "object": "model"}]}


@app.post("/v1/chat/completions")
def chat(body: dict):
    text = body["messages"][-1]["content"]
    if FAIL and text.endswith("9") and text not in seen:  # every 10th text fails once
        seen.add(text)
        return JSONResponse({"error": {"message": "busy"}}, status_code=503, headers={"Retry-After": "0"})
    content = [{"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []} for t, lp in TOKENS]
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": {"content": content},
                         "message": {"role": "assistant", "content": "".join(t for t, _ in TOKENS)}}]}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")

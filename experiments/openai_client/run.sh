#!/usr/bin/env bash
# nerft's own OpenAI client (httpx, inference/openai_backend.OpenAIEngine) against the `openai` SDK, both at 8
# requests in flight, 2,000 chat completions each against a fake local server (fixed answer with token
# log-probabilities), twice each, then again with every 10th text failing once with 503 (Retry-After: 0).
# Needs `pip install openai` in the active environment (not a nerft dependency). Results: results/openai_client.md
#   bash experiments/openai_client/run.sh
set -euo pipefail
cd "$(dirname "$0")"
for mode in ok fail; do
  python fake_server.py 8766 "$mode" & server=$!
  sleep 4
  for _ in 1 2; do for client in nerft sdk; do python clients.py "$client" 2000 8766; done; done
  kill "$server"; wait "$server" 2>/dev/null || true
done

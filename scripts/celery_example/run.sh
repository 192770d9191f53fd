#!/usr/bin/env bash
# A SQLite jobtracker server, a real Celery worker, one 500-row tracked task polled with the seed's
# loop; the final body is the last line. Stops what it started. Needs Redis (see the README).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="$ROOT/.venv/bin/python"
JT="$ROOT/.venv/bin/jobtracker"
export JOBTRACKER_CELERY_BROKER="${JOBTRACKER_CELERY_BROKER:-redis://127.0.0.1:6379/14}"
export EXAMPLE_QUEUE="celery_example_$$"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
export JOBTRACKER_STORE="sqlite:///$WORK/jobs.db"
"$JT" migrate >/dev/null
OWNER_KEY="$("$JT" keys create --name customer | tail -1)"
OWNER_ID="$("$JT" keys list | awk '/customer/ {print $1}')"
export JOBTRACKER_API_KEY="$("$JT" keys create --name platform --scope worker --owner "$OWNER_ID" | tail -1)"
export EXAMPLE_OWNER_KEY="$OWNER_KEY" EXAMPLE_OWNER_ID="$OWNER_ID"
PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export JOBTRACKER_URL="http://127.0.0.1:$PORT"
"$JT" serve --port "$PORT" >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
cd "$HERE"
"$PY" -m celery -A tasks worker --pool solo -Q "$EXAMPLE_QUEUE" -n "example-$$@%h" \
    --loglevel INFO --logfile "$WORK/worker.log" --without-gossip --without-mingle >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 600); do
    if curl -sf "$JOBTRACKER_URL/healthz" >/dev/null && grep -q " ready." "$WORK/worker.log" 2>/dev/null; then break; fi
    sleep 0.1
done
"$PY" enqueue.py

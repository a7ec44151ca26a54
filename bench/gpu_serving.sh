#!/usr/bin/env bash
# The HTTP path on the GPU machine: the service on the CUDA execution provider with fp16 artifacts, and the
# load generator beside it (replaying payload files written here with `python -m bench.loadgen
# --dump-payloads`, since ../shared/data does not travel). Results: JSON lines in $OUT/gpu_http_r<replicas>.jsonl.
# REPLICAS=N starts N service processes (ports 8000..) sharing the GPU, as N pods on one GPU node would:
# one uvicorn process is bound by Python's per-request work long before the GPU is busy.
# Usage (on the GPU machine, onnxruntime-gpu and the serving wheels on PYTHONPATH):
#   REPLICAS=1 bash bench/gpu_serving.sh artifacts/gpu-store artifacts/gpu-payloads
set -euo pipefail
store=${1:-artifacts/gpu-store}
payloads=${2:-artifacts/gpu-payloads}
out=${OUT:-/tmp/gpu-bench}
logs=${LOGS:-/tmp/gpu-logs}
duration=${DURATION:-10}
mkdir -p "$out" "$logs"
export INFERENCE_MODEL_STORE=$store INFERENCE_PROVIDER=cuda INFERENCE_SESSIONS_PER_MODEL=${SESSIONS:-2} \
  INFERENCE_MAX_BATCH_SIZE=${MAX_BATCH:-256} INFERENCE_SUB_BATCH_SIZE=${SUB_BATCH:-128} \
  INFERENCE_MAX_BATCH_TOKENS=${BATCH_TOKENS:-16384} INFERENCE_MAX_WAIT_MS=${MAX_WAIT_MS:-2} \
  INFERENCE_QUEUE_CAPACITY=16384 INFERENCE_LOG_LEVEL=warning
replicas=${REPLICAS:-1}
servers=()
urls=""
trap 'for p in "${servers[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
start=$(date +%s.%N)
for i in $(seq 0 $((replicas - 1))); do
  port=$((8000 + i))
  # torch first: it loads the CUDA libraries that onnxruntime-gpu links against
  INFERENCE_HOST=127.0.0.1 INFERENCE_PORT=$port INFERENCE_LOG_LEVEL=warning \
    python3 -c "import torch; from app.__main__ import main; main()" \
    >"$logs/server-$i.log" 2>&1 &
  servers+=($!)
  urls="${urls:+$urls,}http://127.0.0.1:$port"
done
for i in $(seq 0 $((replicas - 1))); do
  for _ in $(seq 1 600); do
    if curl -sf -o /dev/null "http://127.0.0.1:$((8000 + i))/readyz"; then break; fi
    kill -0 "${servers[$i]}" 2>/dev/null || { echo "server $i exited"; cat "$logs/server-$i.log"; exit 1; }
    sleep 0.2
  done
done
echo "$replicas replica(s) ready after $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"
curl -s http://127.0.0.1:8000/v1/models | python3 -c "import json,sys; [print(m['name'], m['version'], m['precision'], m['provider'], m.get('sessions')) for m in json.load(sys.stdin)['models']]"
curl -s http://127.0.0.1:8000/v1/sentiment -H 'content-type: application/json' -d '{"texts":["Battery died after two days."]}'; echo
cell() {  # payload-file concurrency processes
  python3 -m bench.loadgen --url "$urls" --payload-file "$payloads/$1.jsonl" --concurrency "$2" \
    --processes "$3" --duration "$duration" --warmup 3 | tee -a "$out/gpu_http_r$replicas.jsonl" | python3 -c "
import json,sys; r=json.load(sys.stdin)
print(f\"replicas=$replicas $1 c=$2 p=$3: {r['texts_per_s']:.0f} texts/s {r['requests_per_s']:.0f} req/s p50 {r['p50_ms']:.1f} p99 {r['p99_ms']:.1f} ms client CPU {r['client_cpu_pct']:.0f}% statuses {r['statuses']}\")"
}
cells=("sentiment 64 2" "sentiment 256 4" "sentiment16 32 2" "sentiment16 128 4" "rank 32 2" "recommend 32 2")
if [ -n "${CELLS:-}" ]; then IFS=';' read -ra cells <<<"$CELLS"; fi
for spec in "${cells[@]}"; do
  # shellcheck disable=SC2086
  cell $spec
done
nvidia-smi --query-compute-apps=pid,used_memory --format=csv || true
grep -iE "warn|error" "$logs"/server-*.log | head -5 || true

#!/usr/bin/env bash
# A RESPONSA_CMD for ../shared/bench that serves with key limits and metrics on, to compare with
# the plain `responsa` in the same session:
#
#   RESPONSA_CMD=.venv/bin/responsa bench/run.sh responsa                      # off
#   RESPONSA_CMD="$PWD/benchmarks/limits_on.sh" bench/run.sh responsa          # on
#
# The harness sends `Authorization: Bearer bench`. Here `bench` is a store key (`responsa keys`)
# with every limit set (far above what a run reaches: each is counted, none refuses), in place
# of the `--api-key bench` the harness passes; --metrics-port is on too. RESPONSA (default: the
# responsa beside this script's .venv) is the command run.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
responsa=${RESPONSA:-$here/.venv/bin/responsa}
[ "${1:-}" = serve ] || exec "$responsa" "$@"
args=() data=""
while [ $# -gt 0 ]; do
  case "$1" in
    --api-key) shift 2; continue;;
    --data-dir) data=$2;;
  esac
  args+=("$1"); shift
done
"$(dirname "$responsa")/python" - "$data" <<'PY'
import asyncio, sys, time
from responsa.keys import key_hash
from responsa.store import KeyRecord, Limits, open_store

async def main() -> None:
    store = open_store(None, sys.argv[1])
    await store.open()
    big = 10**12
    await store.add_key(KeyRecord(id="key_bench", name="bench", owner="bench", hash=key_hash("bench"),
                                  created_at=int(time.time()),
                                  limits=Limits(big, big, big, 10**6, 10**6)))
    await store.close()

asyncio.run(main())
PY
port=$("$(dirname "$responsa")/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
exec "$responsa" "${args[@]}" --metrics-port "$port"

#!/usr/bin/env bash
# N test-guest VMs (default 200) and C concurrent clients (default 16)
# doing execVM round-robin over them for S seconds (default 60), with wrk.
# Usage: fastvmd/bench/exec-load.sh FASTVMD [N] [C] [S]
set -euo pipefail
exe=$1; vms=${2:-200}; conns=${3:-16}; secs=${4:-60}
d=$(mktemp -d)
"$exe" serve --listen 127.0.0.1:0 --guest test --no-net --data-dir $d/data --quota-vcpu 100000 --quota-memory-mib 100000000 --quota-disk-gib 100000000 > $d/out 2>$d/err &
pid=$!
trap 'kill $pid; for l in $d/data/vms/*/monitor.lock; do kill -9 $(cat $l) 2>/dev/null || true; done; rm -rf $d' EXIT
for i in $(seq 100); do grep -q '^listening: ' $d/out && break; sleep 0.1; done
url=$(sed -n 's/^listening: //p' $d/out); key=$(sed -n 's/^api-key: //p' $d/out)
start=$(date +%s.%N)
ids=()
for i in $(seq $vms); do
  id=$(python3 -c "
import json,sys,urllib.request
r=urllib.request.Request('$url/v1/vms',data=b'{\"machineType\":\"c1m2\"}',headers={'X-API-Key':'$key','Content-Type':'application/json'})
print(json.load(urllib.request.urlopen(r))['id'])")
  ids+=("$id")
done
echo "created $vms VMs in $(python3 -c "print(round($(date +%s.%N)-$start,1))") s; daemon RSS $(awk '/VmRSS/{print $2/1024}' /proc/$pid/status) MiB"
lua=$d/exec.lua
{
  echo 'ids = {'; for id in "${ids[@]}"; do echo "\"$id\","; done; echo '}'
  cat <<'LUA'
counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"command":["echo","load"]}'
request = function()
  counter = counter + 1
  return wrk.format(nil, "/v1/vms/" .. ids[(counter % #ids) + 1] .. "/exec")
end
LUA
} > $lua
wrk -t2 -c$conns -d${secs}s --latency -s $lua -H "X-API-Key: $key" $url | grep -E "Requests/sec|Latency|99%|50%|Non-2xx|Socket errors|requests in"
echo "daemon RSS after: $(awk '/VmRSS/{print $2/1024}' /proc/$pid/status) MiB, fds $(ls /proc/$pid/fd | wc -l)"

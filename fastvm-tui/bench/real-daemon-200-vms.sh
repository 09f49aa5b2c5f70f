#!/usr/bin/env bash
# The dashboard against a real daemon with 200 running test-guest VMs:
# fastvm-tui's idle CPU in a 200x60 tmux pane over 30 s, and what the 200
# idle VMs and the daemon use meanwhile (utime+stime from /proc).
# Run from the repository root after
#   cargo build --release -p fastvmd -p fastvm-tui
# Needs /dev/kvm and tmux; takes about a minute.
set -euo pipefail
B=${B:-target/x86_64-unknown-linux-gnu/release}
D=$(mktemp -d)
$B/fastvmd serve --guest test --no-net --listen 127.0.0.1:0 --data-dir $D/home \
  --quota-vcpu 1000 --quota-memory-mib 10000000 --quota-disk-gib 100000 >$D/serve.out 2>$D/serve.err &
SERVE=$!
for i in $(seq 50); do grep -q '^socket:' $D/serve.out 2>/dev/null && break; sleep 0.2; done
SOCK=$(awk '/^socket:/ {print $2}' $D/serve.out)
t0=$(date +%s.%N)
for i in $(seq -w 1 200); do
  $B/fastvmd call createVM "{\"body\":{\"machineType\":\"c1m2\",\"name\":\"vm-$i\"}}" --socket $SOCK >/dev/null
done
t1=$(date +%s.%N)
echo "created 200 VMs in $(echo "$t1 - $t0" | bc) s"
sleep 3
running=$($B/fastvmd call listVMs '{}' --socket $SOCK | grep -c '"status": *"running"' || true)
echo "running: $running of 200"
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
mon_ticks() { local s=0; for p in $(pgrep -f "$D/home/vms/"); do s=$((s + $(ticks $p))); done; echo $s; }
tmux new-session -d -s tui200 -x 200 -y 60 "$B/fastvm-tui --socket $SOCK"
sleep 5
TUI=$(pgrep -f "fastvm-tui --socket $SOCK" | head -1)
a=$(ticks $TUI); m0=$(mon_ticks); s0=$(ticks $SERVE)
sleep 30
b=$(ticks $TUI); m1=$(mon_ticks); s1=$(ticks $SERVE)
echo "fastvm-tui idle: $((b-a)) clock ticks in 30 s ($(echo "scale=2; ($b-$a)/30" | bc)% of a core)"
echo "200 idle VMs: $((m1-m0)) clock ticks in 30 s ($(echo "scale=2; ($m1-$m0)/30" | bc)% of a core)"
echo "daemon: $((s1-s0)) clock ticks in 30 s ($(echo "scale=2; ($s1-$s0)/30" | bc)% of a core)"
tmux capture-pane -p -t tui200 | head -8
tmux kill-session -t tui200
for p in $(pgrep -f "$D/home/vms/"); do kill $p; done
kill $SERVE; wait $SERVE 2>/dev/null || true
rm -rf $D

#!/usr/bin/env bash
# Node benchmarks (issue targets): start to apid answering (< 300 ms) and resident memory of
# machined + apid + trustd after start (< 40 MiB). Prints figures measured in one run, with the
# ratio of the start time to one `talosctl version` call against a running node (the floor: a
# client process, a TLS handshake and one call).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p machined -p talosctl -p discovery
bin=target/release
dir=$(mktemp -d "${TMPDIR:-/tmp}/talos-bench.XXXXXX")
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
"$bin/talosctl" gen config bench https://127.0.0.1:6443 -o "$dir" --with-docs=false >/dev/null 2>&1
export TALOSCONFIG="$dir/talosconfig"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ms() { echo $(( $(date +%s%N) / 1000000 )); }

runs=5
total=0
for i in $(seq $runs); do
    rm -rf "$dir/state"; mkdir -p "$dir/state"
    t0=$(ms)
    "$bin/machined" --config "$dir/controlplane.yaml" --listen "127.0.0.1:$port" \
        --state-dir "$dir/state" --trustd-listen 127.0.0.1:0 2>/dev/null &
    pid=$!
    until "$bin/talosctl" version -e "127.0.0.1:$port" >/dev/null 2>&1; do :; done
    t1=$(ms)
    total=$(( total + t1 - t0 ))
    if [ "$i" -lt "$runs" ]; then kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; fi
done
start=$(( total / runs ))

calls=10
t0=$(ms)
for i in $(seq $calls); do "$bin/talosctl" version -e "127.0.0.1:$port" >/dev/null; done
call=$(( ( $(ms) - t0 ) / calls ))

# One proxy hop: the same call routed through another node's apid (node B behind node A).
mkdir -p "$dir/b"
port_b=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/machined" --config "$dir/controlplane.yaml" --listen "127.0.0.1:$port_b" \
    --state-dir "$dir/b" --trustd-listen 127.0.0.1:0 2>/dev/null &
pid_b=$!
until "$bin/talosctl" version -e "127.0.0.1:$port_b" >/dev/null 2>&1; do :; done
t0=$(ms)
for i in $(seq $calls); do "$bin/talosctl" version -e "127.0.0.1:$port_b" >/dev/null; done
direct=$(( ( $(ms) - t0 ) ))
t0=$(ms)
for i in $(seq $calls); do "$bin/talosctl" version -e "127.0.0.1:$port" -n "127.0.0.1:$port_b" >/dev/null; done
hop=$(( ( $(ms) - t0 ) ))
kill "$pid_b"; wait "$pid_b" 2>/dev/null || true

sleep 1
# RSS counts the binary's pages once per process (the three share them); PSS splits shared
# pages among their sharers: what the node really costs.
rss=0
pss=0
for p in $pid $(pgrep -P "$pid" || true); do
    kb=$(awk '/VmRSS/ {print $2}' "/proc/$p/status")
    rss=$(( rss + kb ))
    kb=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")
    pss=$(( pss + kb ))
done

echo "node start to apid answering: ${start} ms (mean of $runs; target < 300 ms)"
echo "one talosctl version call on a running node: ${call} ms"
awk -v s="$start" -v c="$call" 'BEGIN { if (c > 0) printf "ratio start/call: %.2f\n", s / c }'
awk -v r="$pss" -v s="$rss" 'BEGIN { printf "memory machined+apid+trustd: PSS %.1f MiB (target < 40 MiB), RSS summed %.1f MiB\n", r / 1024, s / 1024 }'
awk -v h="$hop" -v d="$direct" 'BEGIN { if (d > 0) printf "talosctl version through one proxy hop / direct: %.2f (target < 1.3)\n", h / d }'

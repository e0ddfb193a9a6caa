#!/usr/bin/env bash
# Kubernetes on the node (issue target: under 1 s): the time from a control plane's etcd turning
# healthy to its three static pods rendered and served to the kubelet, read from the node's
# own log (both moments are logged with microseconds). Then the cost of rendering itself
# against a plain YAML encode of the same objects (`cargo bench -p k8s`). Needs root.
# Prints figures measured in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup
cargo build --release -q -p machined -p talosctl -p discovery
bin=$PWD/target/release
dir=$(mktemp -d "${TMPDIR:-/tmp}/talos-bench-k8s.XXXXXX")
name="k8s$$"
cleanup() {
    "$bin/talosctl" cluster destroy --force --name "$name" --state "$dir/state" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
runs=${RUNS:-3}
results=()
for r in $(seq "$runs"); do
    echo "run $r: creating" >&2
    "$bin/talosctl" cluster create --name "$name" --state "$dir/state" --talosconfig "$dir/talosconfig" \
        --controlplanes 1 --workers 0 --api-port 0 --wait=false >"$dir/create.log" 2>&1 \
        || { cat "$dir/create.log"; exit 1; }
    log="$dir/state/$name/$name-controlplane-1.log"
    waited=0
    until grep -q "static pods served pods=3" "$log" 2>/dev/null; do
        sleep 0.1; waited=$((waited + 1))
        [ "$waited" -lt 1200 ] || { echo "no static pods served" >&2; tail -20 "$log" >&2; exit 1; }
    done
    results+=("$(python3 - "$log" <<'PY'
import re, sys
from datetime import datetime
def at(line):
    return datetime.fromisoformat(re.sub(r"\x1b\[[0-9;]*m", "", line).split()[0].replace("Z", "+00:00"))
healthy = served = None
for line in open(sys.argv[1], errors="replace"):
    clean = re.sub(r"\x1b\[[0-9;]*m", "", line)
    if healthy is None and ": healthy service=\"etcd\"" in clean:
        healthy = at(line)
    elif healthy and "static pods served pods=3" in clean:
        served = at(line)
        break
print(round((served - healthy).total_seconds() * 1000))
PY
)")
    echo "run $r: etcd healthy -> static pods served: ${results[-1]} ms" >&2
    "$bin/talosctl" cluster destroy --force --name "$name" --state "$dir/state" >/dev/null 2>&1
done
sorted=$(printf '%s\n' "${results[@]}" | sort -n | tr '\n' ' ')
echo "etcd healthy -> static pods rendered and served (ms, $runs runs, sorted): $sorted(goal < 1000)"
echo "== rendering the three static pods against a YAML encode of the same objects"
cargo bench -p k8s --bench render 2>&1 | grep -B1 "time:" | grep -v "^--"

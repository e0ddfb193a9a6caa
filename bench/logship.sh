#!/usr/bin/env bash
# Log shipping benchmark (issue target): json_lines records per second machined's shipper
# writes over TCP on loopback, against socat alone writing the same lines (ratio). Each
# receiver is socat, counting what arrives. Prints figures measured in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup
command -v socat >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null
cargo build --release -q -p machined
bin=$PWD/target/release
records=${RECORDS:-200000}
dir=$(mktemp -d "${TMPDIR:-/tmp}/talos-bench-logship.XXXXXX")
trap 'rm -rf "$dir"' EXIT
ms() { date +%s%3N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The shipper: the records a node would send, one json_lines record each.
port=$(free_port)
socat -u "TCP-LISTEN:$port,reuseaddr" "OPEN:$dir/shipped,creat,trunc" &
rx=$!
sleep 0.3
shipper_ms=$("$bin/machined" --role logship-bench --bench-endpoint "tcp://127.0.0.1:$port/" --bench-records "$records")
wait "$rx"
got=$(wc -l < "$dir/shipped")

# socat alone: the same lines, from a file, to the same kind of receiver.
head -n "$records" "$dir/shipped" > "$dir/lines"
port=$(free_port)
socat -u "TCP-LISTEN:$port,reuseaddr" "OPEN:$dir/copied,creat,trunc" &
rx=$!
sleep 0.3
t0=$(ms)
socat -u "OPEN:$dir/lines" "TCP:127.0.0.1:$port"
wait "$rx"
socat_ms=$(( $(ms) - t0 ))

echo "records shipped by machined: $got of $records in ${shipper_ms} ms ($(( records * 1000 / (shipper_ms > 0 ? shipper_ms : 1) )) records/s)"
echo "the same lines by socat alone: ${socat_ms} ms ($(( records * 1000 / (socat_ms > 0 ? socat_ms : 1) )) records/s)"
awk -v a="$shipper_ms" -v b="$socat_ms" 'BEGIN { if (b > 0) printf "ratio machined/socat: %.2f\n", a / b }'

# Shared by the benchmarks (sourced).

# Wait until the cluster's OS is healthy: `talosctl health` (with the arguments given) until
# every check before the kubelet's has passed. No kubelet image can be had on the machines
# these run on, so the kubelet waits for it; where one can, health passes whole and so does this.
os_healthy() {
    python3 - "$@" <<'PY'
import subprocess, sys
p = subprocess.Popen(sys.argv[1:], stderr=subprocess.PIPE, text=True)
for line in p.stderr:
    if line.startswith("waiting for kubelet to be healthy"):
        p.kill()
        sys.exit(0)
sys.exit(p.wait())
PY
}

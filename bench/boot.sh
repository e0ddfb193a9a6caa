#!/usr/bin/env bash
# Boot benchmark (issue #10): QEMU start to apid answering (maintenance mode) for the image the
# imager builds, against the floor: the same kernel booting a trivial static init (Debian's
# static busybox) that powers off at once. Both under TCG, same machine and command line.
# Also from the disk image (`imager disk`): SeaBIOS, EXTLINUX from BOOT, slot A, STATE and
# EPHEMERAL mounted. Prints the image sizes too. Needs root (the disk image uses loop devices).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --profile image --target x86_64-unknown-linux-musl -p machined
cargo build -q -p provision --bin imager -p talosctl
dir=$(mktemp -d "${TMPDIR:-/tmp}/talos-boot.XXXXXX")
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
target/debug/imager boot --machined target/x86_64-unknown-linux-musl/image/machined -o "$dir/img"
target/debug/imager disk --from "$dir/img" -o "$dir/disk.raw"
mkdir -p "$dir/floor/bin"
cp /bin/busybox "$dir/floor/bin/busybox"
printf '#!/bin/busybox sh\n/bin/busybox poweroff -f\n' >"$dir/floor/init"
chmod +x "$dir/floor/init"
(cd "$dir/floor" && find . | cpio -o -H newc --quiet | gzip -1 >"$dir/floor.img")
qemu=(qemu-system-x86_64 -machine q35,accel=tcg -m 1024 -smp 2 -display none -monitor none
	-no-reboot -serial null -device virtio-rng-pci)
vm=("${qemu[@]}" -kernel "$dir/img/vmlinuz")
ms() { echo $(($(date +%s%N) / 1000000)); }
# Milliseconds from the start of a VM (these arguments) to apid answering in maintenance mode.
to_apid() {
	local port t0
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	t0=$(ms)
	"$@" -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:50000" -device virtio-net-pci,netdev=n0 &
	pid=$!
	# Each try is bounded: one started before the guest's network is up would wait for its
	# connection timeout.
	until timeout 1 target/debug/talosctl version --insecure -n "127.0.0.1:$port" -e "127.0.0.1:$port" >/dev/null 2>&1; do
		sleep 0.1
	done
	echo $(($(ms) - t0))
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	pid=""
}
runs=3
floor=0
node=0
disk=0
for _ in $(seq $runs); do
	t0=$(ms)
	"${vm[@]}" -initrd "$dir/floor.img" -append "console=ttyS0 panic=-1"
	floor=$((floor + $(ms) - t0))
	node=$((node + $(to_apid "${vm[@]}" -initrd "$dir/img/initramfs.img" -append "console=ttyS0 talos.platform=metal panic=-1")))
	disk=$((disk + $(to_apid "${qemu[@]}" -drive "file=$dir/disk.raw,format=raw,if=virtio")))
done
floor=$((floor / runs))
node=$((node / runs))
disk=$((disk / runs))
echo "floor (kernel + static init that powers off): ${floor} ms"
echo "QEMU start to apid answering (maintenance):   ${node} ms"
python3 -c "print(f'ratio: {$node/$floor:.2f}x (goal < 2x)')"
echo "the same from the disk image (boot loader):   ${disk} ms"
python3 -c "print(f'ratio: {$disk/$floor:.2f}x')"

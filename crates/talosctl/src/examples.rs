//! An example for every command's `--help` (commands with a longer story keep their own
//! `after_help`; this table serves the rest).

use clap::Command;

const EXAMPLES: &[(&str, &str)] = &[
    ("gen config", "talosctl gen config my-cluster https://10.5.0.2:6443 --config-patch @patch.yaml"),
    ("gen secrets", "talosctl gen secrets -o secrets.yaml"),
    ("gen ca", "talosctl gen ca --organization talos"),
    ("gen key", "talosctl gen key --name admin"),
    ("gen csr", "talosctl gen csr --key admin.key --ip 10.5.0.2"),
    ("gen crt", "talosctl gen crt --ca ca --csr admin.csr --name admin"),
    ("gen keypair", "talosctl gen keypair --organization talos --ip 10.5.0.2"),
    ("machineconfig patch", "talosctl machineconfig patch worker.yaml -p @patch.yaml -o worker-1.yaml"),
    ("machineconfig gen", "talosctl machineconfig gen my-cluster https://10.5.0.2:6443"),
    ("machineconfig diff", "talosctl machineconfig diff worker.yaml worker-1.yaml"),
    ("validate", "talosctl validate --config controlplane.yaml --mode metal"),
    ("config add", "talosctl config add prod --ca ca.crt --crt admin.crt --key admin.key"),
    ("config context", "talosctl config context prod"),
    ("config contexts", "talosctl config contexts"),
    ("config endpoint", "talosctl config endpoint 10.5.0.2 10.5.0.3"),
    ("config node", "talosctl config node 10.5.0.2"),
    ("config info", "talosctl config info -o yaml"),
    ("config merge", "talosctl config merge ./talosconfig"),
    ("config new", "talosctl -n 10.5.0.2 config new --roles os:reader reader.talosconfig"),
    ("config remove", "talosctl config remove 'old-*' -y"),
    ("version", "talosctl -n 10.5.0.2 version\n  talosctl version --client"),
    ("get", "talosctl -n 10.5.0.2 get members\n  talosctl -n 10.5.0.2 get ns config\n  talosctl -n 10.5.0.2 get links -o yaml --watch"),
    ("inspect dependencies", "talosctl -n 10.5.0.2 inspect dependencies | dot -Tpng > deps.png"),
    ("apply-config", "talosctl -n 10.5.0.2 apply-config -f controlplane.yaml --mode=no-reboot\n  talosctl -n 10.5.0.2 apply-config --insecure -f controlplane.yaml"),
    ("patch", "talosctl -n 10.5.0.2 patch mc -p @patch.yaml\n  talosctl -n 10.5.0.2 patch mc -p '[{\"op\": \"replace\", \"path\": \"/machine/kubelet/image\", \"value\": \"ghcr.io/siderolabs/kubelet:v1.35.0\"}]'"),
    ("edit", "talosctl -n 10.5.0.2,10.5.0.3 edit machineconfig --mode=no-reboot"),
    ("service", "talosctl -n 10.5.0.2 services\n  talosctl -n 10.5.0.2 service etcd restart"),
    ("logs", "talosctl -n 10.5.0.2 logs machined\n  talosctl -n 10.5.0.2 logs -k kube-system/kube-apiserver-cp-1:kube-apiserver -f"),
    ("memory", "talosctl -e 10.5.0.2 -n 10.5.0.2 -n 10.5.0.3 memory"),
    ("mounts", "talosctl -n 10.5.0.2 mounts"),
    ("list", "talosctl -n 10.5.0.2 ls -l -H /var/log"),
    ("read", "talosctl -n 10.5.0.2 read /proc/cmdline"),
    ("copy", "talosctl -n 10.5.0.2 cp /var/log/containers ./logs"),
    ("usage", "talosctl -n 10.5.0.2 du -a -d 1 /var"),
    ("processes", "talosctl -n 10.5.0.2 ps --sort cpu"),
    ("dmesg", "talosctl -n 10.5.0.2 dmesg -f --tail"),
    ("events", "talosctl -n 10.5.0.2 events --tail 10"),
    ("upgrade", "talosctl -n 10.5.0.3 upgrade --image ghcr.io/siderolabs/installer:v1.14.0"),
    ("upgrade-k8s", "talosctl -n 10.5.0.2 upgrade-k8s --to 1.36.0 --dry-run\n  talosctl -n 10.5.0.2 upgrade-k8s --to 1.36.0"),
    ("inject serviceaccount", "talosctl inject serviceaccount -f deployment.yaml --roles os:reader > deployment-talos.yaml"),
    ("rollback", "talosctl -n 10.5.0.3 rollback"),
    ("stats", "talosctl -n 10.5.0.2 stats\n  talosctl -n 10.5.0.2 stats -k"),
    ("containers", "talosctl -n 10.5.0.2 containers -k"),
    ("image list", "talosctl -n 10.5.0.2 image ls --namespace system"),
    ("image pull", "talosctl -n 10.5.0.2 image pull registry.k8s.io/pause:3.10"),
    ("image remove", "talosctl -n 10.5.0.2 image rm registry.k8s.io/pause:3.10"),
    ("image k8s-bundle", "talosctl image k8s-bundle --k8s-version 1.35.0 > images.txt"),
    ("dashboard", "talosctl -n 10.5.0.2,10.5.0.3 dashboard"),
    ("bootstrap", "talosctl -n 10.5.0.2 bootstrap\n  talosctl -n 10.5.0.2 bootstrap --recover-from db.snapshot"),
    ("etcd members", "talosctl -n 10.5.0.2 etcd members"),
    ("etcd remove-member", "talosctl -n 10.5.0.2 etcd remove-member 6f0a3e4dd0c2b2a1"),
    ("etcd leave", "talosctl -n 10.5.0.4 etcd leave"),
    ("etcd forfeit-leadership", "talosctl -n 10.5.0.2 etcd forfeit-leadership"),
    ("etcd snapshot", "talosctl -n 10.5.0.2 etcd snapshot db.snapshot"),
    ("etcd status", "talosctl -n 10.5.0.2,10.5.0.3,10.5.0.4 etcd status"),
    ("etcd alarm list", "talosctl -n 10.5.0.2 etcd alarm list"),
    ("etcd alarm disarm", "talosctl -n 10.5.0.2 etcd alarm disarm"),
    ("etcd defrag", "talosctl -n 10.5.0.2 etcd defrag"),
    ("etcd downgrade validate", "talosctl -n 10.5.0.2 etcd downgrade validate 3.5"),
    ("etcd downgrade enable", "talosctl -n 10.5.0.2 etcd downgrade enable 3.5"),
    ("etcd downgrade cancel", "talosctl -n 10.5.0.2 etcd downgrade cancel"),
    ("kubeconfig", "talosctl -n 10.5.0.2 kubeconfig ~/.kube/config --merge"),
    ("health", "talosctl -n 10.5.0.2 health --wait-timeout 5m"),
    ("cluster create", "talosctl cluster create --controlplanes 3 --workers 2\n  talosctl cluster create --provisioner qemu --controlplanes 1 --workers 1"),
    ("cluster show", "talosctl cluster show --name talos-default"),
    ("cluster scale", "talosctl cluster scale --workers 3"),
    ("cluster destroy", "talosctl cluster destroy --name talos-default"),
    ("cluster reboot", "talosctl cluster reboot --nodes 10.5.0.3"),
    ("completion bash", "source <(talosctl completion bash)"),
    ("completion zsh", "talosctl completion zsh > \"${fpath[1]}/_talosctl\""),
    ("completion fish", "talosctl completion fish > ~/.config/fish/completions/talosctl.fish"),
    ("completion powershell", "talosctl completion powershell | Out-String | Invoke-Expression"),
];

/// `cmd` with an example after the help of each command the table names (and that has none
/// of its own).
pub fn apply(cmd: Command) -> Command {
    fn walk(cmd: Command, path: &str) -> Command {
        let mut cmd = cmd.mut_subcommands(|sub| {
            let p = match path.is_empty() {
                true => sub.get_name().to_string(),
                false => format!("{path} {}", sub.get_name()),
            };
            walk(sub, &p)
        });
        if cmd.get_after_help().is_none() {
            if let Some((_, example)) = EXAMPLES.iter().find(|(p, _)| *p == path) {
                cmd = cmd.after_help(format!("Examples:\n  {example}"));
            }
        }
        cmd
    }
    walk(cmd, "")
}

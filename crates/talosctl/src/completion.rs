//! `talosctl completion bash|zsh|fish|powershell`: a shell completion script generated from
//! this binary's own command tree (commands, aliases, flags and their values).

use clap::{Args, Command, Subcommand};
use clap_complete::Shell;
use machinery::Result;

#[derive(Args)]
#[command(
    after_help = "Examples:\n  source <(talosctl completion bash)\n  talosctl completion zsh > \"${fpath[1]}/_talosctl\"\n  talosctl completion fish > ~/.config/fish/completions/talosctl.fish"
)]
pub struct CompletionArgs {
    #[command(subcommand)]
    shell: ShellCmd,
}

#[derive(Args)]
pub struct ShellArgs {
    /// Leave the descriptions of commands and flags out of the completions.
    #[arg(long)]
    no_descriptions: bool,
}

#[derive(Subcommand)]
enum ShellCmd {
    /// Print a bash completion script (load it with `source <(talosctl completion bash)`).
    Bash(ShellArgs),
    /// Print a zsh completion script.
    Zsh(ShellArgs),
    /// Print a fish completion script.
    Fish(ShellArgs),
    /// Print a PowerShell completion script.
    Powershell(ShellArgs),
}

/// The command tree without any help text.
fn without_descriptions(cmd: Command) -> Command {
    cmd.about(None)
        .long_about(None)
        .mut_args(|a| a.help(None).long_help(None))
        .mut_subcommands(without_descriptions)
}

pub fn run(a: CompletionArgs, tree: Command) -> Result<()> {
    let (shell, args) = match a.shell {
        ShellCmd::Bash(s) => (Shell::Bash, s),
        ShellCmd::Zsh(s) => (Shell::Zsh, s),
        ShellCmd::Fish(s) => (Shell::Fish, s),
        ShellCmd::Powershell(s) => (Shell::PowerShell, s),
    };
    let mut tree = match args.no_descriptions {
        true => without_descriptions(tree),
        false => tree,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut tree, "talosctl", &mut script);
    std::io::Write::write_all(&mut std::io::stdout(), &script)
        .map_err(|e| machinery::Error::msg(format!("writing the completion script: {e}")))
}

//! The command line as Talos users type it, made into what the clap tree parses:
//! - the connection flags (`-n/--nodes`, `-e/--endpoints`, `--talosconfig`, `--context`,
//!   `-c/--cluster`, `--siderov1-keys-dir`) may come before the subcommand, as upstream's
//!   persistent flags do (`talosctl -n 10.5.0.2 get members`): they are moved after the
//!   deepest subcommand named (`inspect dependencies`);
//! - a boolean flag takes `=true` and `=false` as pflag's do (`--reboot=true`).

use std::ffi::OsString;

/// The connection flags: (short, long).
const GLOBAL: &[(Option<char>, &str)] = &[
    (Some('n'), "nodes"),
    (Some('e'), "endpoints"),
    (None, "talosconfig"),
    (None, "context"),
    (Some('c'), "cluster"),
    (None, "siderov1-keys-dir"),
];

/// Whether `arg` is a connection flag; `Some(true)` when its value is the next argument.
fn global_flag(arg: &str) -> Option<bool> {
    if let Some(long) = arg.strip_prefix("--") {
        let (name, value) = match long.split_once('=') {
            Some((n, _)) => (n, true),
            None => (long, false),
        };
        return GLOBAL.iter().any(|(_, l)| *l == name).then_some(!value);
    }
    let short = arg.strip_prefix('-')?.chars().next()?;
    GLOBAL
        .iter()
        .any(|(s, _)| *s == Some(short))
        .then_some(arg.len() == 2)
}

/// `args` (the program first) with the connection flags before the subcommand moved after it
/// and boolean `--flag=true|false` spelled as clap takes them.
pub fn normalize(args: Vec<OsString>, tree: &clap::Command) -> Vec<OsString> {
    let mut iter = args.into_iter();
    let mut out: Vec<OsString> = iter.next().into_iter().collect();
    let mut hoisted = Vec::new();
    let mut rest: Vec<OsString> = iter.collect();
    // The connection flags in front of the subcommand.
    while let Some(first) = rest.first().and_then(|a| a.to_str()) {
        match global_flag(first) {
            Some(takes_next) => {
                let n = if takes_next { 2 } else { 1 }.min(rest.len());
                hoisted.extend(rest.drain(..n));
            }
            None => break,
        }
    }
    let mut command = tree;
    // Right after the deepest subcommand: the one whose arguments they are.
    let mut at = out.len();
    for arg in rest {
        let text = arg.to_str().unwrap_or_default().to_string();
        if let Some(sub) = (!text.starts_with('-'))
            .then(|| command.find_subcommand(&text))
            .flatten()
        {
            command = sub;
            out.push(arg);
            at = out.len();
            continue;
        }
        match bool_flag(command, &text) {
            Some(Some(flag)) => out.push(flag.into()),
            Some(None) => {}
            None => out.push(arg),
        }
    }
    out.splice(at..at, hoisted);
    out
}

/// `--name=true` / `--name=false` of a flag that takes no value in `command`: the flag, or
/// nothing for its default.
fn bool_flag(command: &clap::Command, arg: &str) -> Option<Option<String>> {
    let (name, value) = arg.strip_prefix("--")?.split_once('=')?;
    let value: bool = value.parse().ok()?;
    let flag = command
        .get_arguments()
        .find(|a| a.get_long() == Some(name))?;
    match flag.get_action() {
        clap::ArgAction::SetTrue => Some(value.then(|| format!("--{name}"))),
        clap::ArgAction::SetFalse => Some((!value).then(|| format!("--{name}"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, Subcommand};

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(clap::Args, Debug)]
    struct Conn {
        #[arg(short = 'n', long, global = true)]
        nodes: Vec<String>,
        #[arg(short = 'e', long, global = true)]
        endpoints: Vec<String>,
        #[arg(long, global = true, default_value = "")]
        talosconfig: String,
    }

    #[derive(Subcommand, Debug)]
    enum Cmd {
        Get {
            kind: String,
            #[command(flatten)]
            conn: Conn,
        },
        Reset {
            #[arg(long)]
            reboot: bool,
            #[command(flatten)]
            conn: Conn,
        },
        Etcd {
            #[command(subcommand)]
            sub: EtcdCmd,
            #[command(flatten)]
            conn: Conn,
        },
    }

    #[derive(Subcommand, Debug)]
    enum EtcdCmd {
        Members,
    }

    fn parse(line: &str) -> Cmd {
        use clap::CommandFactory;
        let args = std::iter::once("talosctl")
            .chain(line.split_whitespace())
            .map(OsString::from)
            .collect();
        Cli::try_parse_from(normalize(args, &Cli::command()))
            .unwrap_or_else(|e| panic!("{line}: {e}"))
            .command
    }

    #[test]
    fn connection_flags_before_the_subcommand_and_pflag_booleans() {
        let Cmd::Get { kind, conn } = parse("-n 10.5.0.2 -e 127.0.0.1 get members") else {
            panic!()
        };
        assert_eq!(
            (kind.as_str(), conn.nodes, conn.endpoints),
            ("members", vec!["10.5.0.2".into()], vec!["127.0.0.1".into()])
        );
        let Cmd::Get { conn, .. } = parse("--nodes=a,b -n c --talosconfig x get members -n d")
        else {
            panic!()
        };
        assert_eq!(conn.nodes, ["a,b", "c", "d"]);
        assert_eq!(conn.talosconfig, "x");
        let Cmd::Etcd { conn, .. } = parse("-n10.5.0.2 etcd members") else {
            panic!()
        };
        assert_eq!(conn.nodes, ["10.5.0.2"]);
        let Cmd::Reset { reboot, .. } = parse("reset --reboot=true") else {
            panic!()
        };
        assert!(reboot);
        let Cmd::Reset { reboot, .. } = parse("-n a reset --reboot=false") else {
            panic!()
        };
        assert!(!reboot);
        let Cmd::Reset { reboot, .. } = parse("reset --reboot") else {
            panic!()
        };
        assert!(reboot);
    }
}

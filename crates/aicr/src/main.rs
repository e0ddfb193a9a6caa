//! `aicr recipe` resolves a recipe for a query; `aicr bundle` turns it into a bundle.

use std::path::PathBuf;
use std::process::ExitCode;

use aicr::{Catalogue, Criteria, Deployer, Options, Recipe};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "aicr", version, about = "Recipes and bundles for GPU clusters")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Resolve the recipe for a query from the catalogue.
    Recipe {
        #[command(flatten)]
        query: Criteria,
        /// A catalogue folder instead of the built-in one.
        #[arg(long)]
        recipes: Option<PathBuf>,
        /// Where to write the recipe (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Write the bundle of a recipe.
    Bundle {
        /// The recipe (`aicr recipe` writes it).
        #[arg(long)]
        recipe: PathBuf,
        #[arg(long, value_enum)]
        deployer: Deployer,
        /// A snapshot of the cluster (YAML) to check the recipe's constraints against.
        #[arg(long)]
        snapshot: Option<PathBuf>,
        /// A value for a component: <component>:<dotted.path>=<value>; repeatable, last wins.
        #[arg(long)]
        set: Vec<String>,
        /// Argo CD: the git repository the bundle is pushed to.
        #[arg(long, default_value = "")]
        repo_url: String,
        /// The bundle's folder (made; it must not hold a bundle already).
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Recipe {
            query,
            recipes,
            output,
        } => {
            let catalogue = match recipes {
                Some(dir) => Catalogue::from_dir(&dir)?,
                None => Catalogue::builtin()?,
            };
            let text = catalogue.resolve(&query)?.to_yaml();
            match output {
                Some(p) => std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display())),
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        }
        Command::Bundle {
            recipe,
            deployer,
            snapshot,
            set,
            repo_url,
            output,
        } => {
            let r = Recipe::from_yaml(&recipe.display().to_string(), &read(&recipe)?)?;
            let snapshot = match snapshot {
                Some(p) => {
                    let name = p.display().to_string();
                    let docs = aicr::parse_yaml(&name, &read(&p)?)?;
                    Some(
                        docs.into_iter()
                            .next()
                            .map(|d| d.value)
                            .ok_or_else(|| format!("{name}: empty snapshot"))?,
                    )
                }
                None => None,
            };
            let files = aicr::bundle(
                &r,
                &Options {
                    deployer,
                    sets: set,
                    snapshot,
                    repo_url,
                },
            )?;
            if output.join("checksums.txt").exists() {
                return Err(format!(
                    "{} holds a bundle already: remove it or choose another folder",
                    output.display()
                ));
            }
            aicr::write(&output, &files)?;
            eprintln!(
                "wrote {} files of recipe {} to {}",
                files.len(),
                r.metadata.name,
                output.display()
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `fleetpulse users`: manage the users file of the HTTP port.
//!
//! ```text
//! fleetpulse users add admin --role admin --file users.toml       # prints a generated password once
//! fleetpulse users add alice --role csm --customers acme,bolt --password-stdin --file users.toml
//! fleetpulse users token prometheus --label scraper --file users.toml   # prints the token once
//! fleetpulse users list --file users.toml
//! ```
//!
//! `--config fleetpulse.toml` instead of `--file` takes `[http] users_file`.
//! A running service rereads the file on SIGHUP.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fleetpulse_engine::Segment;

use super::roles::Role;
use super::users::{UserEntry, UsersFile, generate_password, hash_secret};

/// `fleetpulse users ...`.
#[derive(Debug, clap::Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    command: UsersCommand,
}

/// Where the users file is.
#[derive(Debug, clap::Args)]
struct Target {
    /// The users file.
    #[arg(long, conflicts_with = "config", required_unless_present = "config")]
    file: Option<PathBuf>,
    /// A service file whose `[http] users_file` to use.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum UsersCommand {
    /// Add a user (the first admin, a CSM, a viewer).
    Add {
        /// Login name; for a CSM, the `csm` value of their customers in customers.toml.
        name: String,
        /// admin: everything; csm: their customers; viewer: the portfolio only.
        #[arg(long, value_enum)]
        role: Role,
        /// Customers this CSM sees besides those with `csm = "NAME"` in customers.toml.
        #[arg(long, value_delimiter = ',')]
        customers: Vec<String>,
        /// Segments whose every customer this CSM sees (high-touch, low-touch, tech-touch).
        #[arg(long, value_delimiter = ',')]
        segments: Vec<String>,
        /// Read the password from standard input (first line) instead of generating one.
        #[arg(long)]
        password_stdin: bool,
        /// No password: the user only has API tokens (a machine such as Prometheus).
        #[arg(long, conflicts_with = "password_stdin")]
        no_password: bool,
        /// Replace an existing user of that name (keeping their tokens).
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Create an API token for a user; it is printed once and stored hashed.
    Token {
        /// The user.
        name: String,
        /// What it is for.
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List users, roles and token ids (never a hash).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Remove a user and their tokens.
    Remove {
        /// The user.
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

impl Target {
    fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(file) = &self.file {
            return Ok(file.clone());
        }
        let config = self.config.as_deref().context("--file or --config")?;
        let service = crate::config::ServiceConfig::load(config)?;
        service
            .http
            .users_file
            .with_context(|| format!("{}: [http] has no users_file", config.display()))
    }
}

/// Runs the subcommand; prints what the user must keep (a password, a token).
pub fn run(args: UsersArgs) -> anyhow::Result<()> {
    match args.command {
        UsersCommand::Add {
            name,
            role,
            customers,
            segments,
            password_stdin,
            no_password,
            replace,
            target,
        } => {
            let path = target.path()?;
            let segments = segments
                .iter()
                .map(|s| parse_segment(s))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if role != Role::Csm && !(customers.is_empty() && segments.is_empty()) {
                anyhow::bail!("--customers and --segments are for --role csm");
            }
            let mut file = UsersFile::load(&path, true)?;
            let (password, shown) = if no_password {
                (None, false)
            } else if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_to_string(&mut line)
                    .context("cannot read the password from standard input")?;
                let password = line.lines().next().unwrap_or("").to_string();
                if password.chars().count() < 12 {
                    anyhow::bail!("the password must be at least 12 characters");
                }
                (Some(password), false)
            } else {
                (Some(generate_password()), true)
            };
            file.add(
                &path,
                UserEntry {
                    name: name.clone(),
                    role,
                    customers,
                    segments,
                    password_hash: password.as_deref().map(hash_secret),
                    tokens: Vec::new(),
                },
                replace,
            )?;
            file.save(&path)?;
            eprintln!("{}: user `{name}` ({role}) saved", path.display());
            if shown && let Some(password) = password {
                eprintln!("password (shown once; keep it in a password manager):");
                println!("{password}");
            }
            reload_hint(&path);
        }
        UsersCommand::Token {
            name,
            label,
            target,
        } => {
            let path = target.path()?;
            let mut file = UsersFile::load(&path, false)?;
            let token = file.new_token(&path, &name, label)?;
            file.save(&path)?;
            eprintln!(
                "{}: token for `{name}` saved; send it as `Authorization: Bearer <token>` \
                 (shown once):",
                path.display()
            );
            println!("{token}");
            reload_hint(&path);
        }
        UsersCommand::List { target } => {
            let path = target.path()?;
            let file = UsersFile::load(&path, false)?;
            for user in &file.users {
                let scope = if user.role == Role::Csm {
                    format!(
                        " customers={} segments={}",
                        user.customers.join(","),
                        user.segments
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                } else {
                    String::new()
                };
                let tokens: Vec<String> = user
                    .tokens
                    .iter()
                    .map(|t| match &t.label {
                        Some(l) => format!("{}({l})", t.id),
                        None => t.id.clone(),
                    })
                    .collect();
                println!(
                    "{} {}{scope} password={} tokens=[{}]",
                    user.name,
                    user.role,
                    if user.password_hash.is_some() {
                        "yes"
                    } else {
                        "no"
                    },
                    tokens.join(",")
                );
            }
        }
        UsersCommand::Remove { name, target } => {
            let path = target.path()?;
            let mut file = UsersFile::load(&path, false)?;
            file.remove(&path, &name)?;
            file.save(&path)?;
            eprintln!("{}: user `{name}` removed", path.display());
            reload_hint(&path);
        }
    }
    Ok(())
}

fn parse_segment(text: &str) -> anyhow::Result<Segment> {
    toml::Value::String(text.to_string())
        .try_into()
        .map_err(|_| {
            anyhow::anyhow!("--segments: `{text}` is not high-touch, low-touch or tech-touch")
        })
}

fn reload_hint(path: &Path) {
    eprintln!(
        "a running service picks up {} on SIGHUP (systemctl reload fleetpulse / kill -HUP)",
        path.display()
    );
}

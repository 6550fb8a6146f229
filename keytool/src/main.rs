//! `reconcile-keyring`: generates, retires and lists the keys of a reconcile-guard keyring, and
//! asks Redis to reload it. Key bytes go only into the file: never to the terminal or a log.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use reconcile_core::keyring::Keyring;
use reconcile_keytool::atomic::{self, Owner};
use reconcile_keytool::kid;
use reconcile_keytool::reload::{Listed, Server};
use reconcile_keytool::ring::{Retire, RingText};
use zeroize::Zeroizing;

/// Bytes of a new key.
const KEY_BYTES: usize = 32;

#[derive(Parser)]
#[command(
    name = "reconcile-keyring",
    version,
    about = "Manage the reconcile module's keyring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Shows each key's id, role and fingerprint (never the key).
    List {
        #[command(flatten)]
        file: FileArgs,
    },
    /// Puts a fresh random key first, so it signs; the old keys stay below it and verify.
    Generate {
        #[command(flatten)]
        file: FileArgs,
        /// Id of the new key; default `k` and the UTC time, e.g. k20250601T120000Z.
        #[arg(long)]
        kid: Option<String>,
        /// Create the keyring file if it does not exist yet.
        #[arg(long)]
        create: bool,
        #[command(flatten)]
        write: WriteArgs,
        #[command(flatten)]
        servers: ServerArgs,
    },
    /// Drops keys that no longer sign; never the signing key.
    Retire {
        #[command(flatten)]
        file: FileArgs,
        /// Keep this many keys, the signing key first, and drop the rest.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "older_than", required_unless_present = "older_than")]
        keep: Option<u32>,
        /// Drop keys that stopped signing longer ago than this (e.g. 1h, 7d), judged by the
        /// date in the id of the key above them.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
        /// Show what would be dropped and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        write: WriteArgs,
        #[command(flatten)]
        servers: ServerArgs,
    },
    /// Sends RECONCILE.KEYRING RELOAD to each server and shows the keys it then holds.
    Reload {
        /// redis://[user@]host:port of each server; the password comes from the environment.
        #[arg(required = true, value_name = "URL")]
        urls: Vec<String>,
        /// The keyring whose signing key every server must report after the reload.
        #[arg(long)]
        keyring: Option<PathBuf>,
        /// The environment variable that holds the password.
        #[arg(long, default_value = "REDISCLI_AUTH")]
        password_env: String,
    },
}

#[derive(Args)]
struct FileArgs {
    /// The keyring file.
    #[arg(
        long,
        env = "RECONCILE_KEYRING",
        default_value = "/etc/redis/reconcile.keyring"
    )]
    keyring: PathBuf,
}

#[derive(Args)]
struct WriteArgs {
    /// Owner of the written file (USER, USER:GROUP or UID:GID; needs root). Default: the owner
    /// of the existing file.
    #[arg(long)]
    owner: Option<String>,
}

#[derive(Args)]
struct ServerArgs {
    /// After writing, reload the keyring on this server (redis://[user@]host:port); repeat or
    /// separate with commas for several. The password comes from --password-env.
    #[arg(long = "reload", value_name = "URL", value_delimiter = ',')]
    urls: Vec<String>,
    /// The environment variable that holds the password for --reload.
    #[arg(long, default_value = "REDISCLI_AUTH")]
    password_env: String,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("reconcile-keyring: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::List { file } => list(&file.keyring),
        Command::Generate {
            file,
            kid,
            create,
            write,
            servers,
        } => {
            let kid = kid.unwrap_or_else(|| kid::kid_at(SystemTime::now()));
            generate(&file.keyring, &kid, create, &write)?;
            reload_all(
                &servers.urls,
                &servers.password_env,
                Some(&file.keyring),
                &[],
            )
        }
        Command::Retire {
            file,
            keep,
            older_than,
            dry_run,
            write,
            servers,
        } => {
            let policy = match (keep, older_than) {
                (Some(n), _) => Retire::Keep(n as usize),
                (None, Some(age)) => Retire::OlderThan {
                    age,
                    now: SystemTime::now(),
                },
                (None, None) => bail!("give --keep or --older-than"),
            };
            let retired = retire(&file.keyring, policy, dry_run, &write)?;
            if dry_run {
                return Ok(());
            }
            reload_all(
                &servers.urls,
                &servers.password_env,
                Some(&file.keyring),
                &retired,
            )
        }
        Command::Reload {
            urls,
            keyring,
            password_env,
        } => reload_all(&urls, &password_env, keyring.as_deref(), &[]),
    }
}

fn list(path: &Path) -> Result<()> {
    let ring = Keyring::load(path).with_context(|| format!("reading {}", path.display()))?;
    for (i, key) in ring.keys().iter().enumerate() {
        let role = if i == 0 { "signing" } else { "verifying" };
        println!("{} {role} {}", key.kid(), key.fingerprint());
    }
    Ok(())
}

/// The keyring's text, checked, with the bytes as read (to detect a concurrent change).
fn read_ring(path: &Path) -> Result<(RingText, Zeroizing<Vec<u8>>)> {
    let shown = path.display();
    // `load` also refuses a file group or others may read, as the module would.
    Keyring::load(path).with_context(|| format!("reading {shown}"))?;
    let bytes = Zeroizing::new(std::fs::read(path).with_context(|| format!("reading {shown}"))?);
    let text = std::str::from_utf8(&bytes).with_context(|| format!("{shown} is not UTF-8"))?;
    let ring = RingText::parse(Zeroizing::new(text.to_string()))
        .with_context(|| format!("reading {shown}"))?;
    Ok((ring, bytes))
}

fn generate(path: &Path, kid: &str, create: bool, write: &WriteArgs) -> Result<()> {
    let exists = path
        .try_exists()
        .with_context(|| format!("checking {}", path.display()))?;
    let (ring, previous) = match (exists, create) {
        (true, _) => {
            let (ring, bytes) = read_ring(path)?;
            (ring, Some(bytes))
        }
        (false, true) => (RingText::blank(), None),
        (false, false) => bail!(
            "{} does not exist; pass --create to start a new keyring",
            path.display()
        ),
    };

    let mut secret = Zeroizing::new([0u8; KEY_BYTES]);
    getrandom::fill(&mut secret[..])
        .map_err(|err| anyhow::anyhow!("reading random bytes from the OS: {err}"))?;
    let new = ring
        .with_new_key(kid, &secret[..])
        .context("adding the new key")?;

    let owner = owner_for(path, write)?;
    atomic::replace(
        path,
        previous.as_deref().map(Vec::as_slice),
        new.as_bytes(),
        owner,
    )?;
    let fingerprint = new.keyring()?.signing().fingerprint().to_string();
    println!(
        "{}: added {kid} (fingerprint {fingerprint}) as the signing key; {} keys",
        path.display(),
        new.kids().len()
    );
    Ok(())
}

fn retire(path: &Path, policy: Retire, dry_run: bool, write: &WriteArgs) -> Result<Vec<String>> {
    let (ring, previous) = read_ring(path)?;
    if matches!(policy, Retire::OlderThan { .. }) {
        for kid in ring.undated() {
            println!("keeping {kid}: the key above it has no date in its id (use --keep)");
        }
    }
    let retired = ring.to_retire(policy);
    if retired.is_empty() {
        println!(
            "{}: nothing to retire; {} keys",
            path.display(),
            ring.kids().len()
        );
        return Ok(retired);
    }
    let smaller = ring.without(&retired).context("removing keys")?;
    if dry_run {
        println!("would retire {}", retired.join(", "));
        return Ok(retired);
    }
    let owner = owner_for(path, write)?;
    atomic::replace(path, Some(&previous), smaller.as_bytes(), owner)?;
    println!(
        "{}: retired {}; {} keys left, {} signs",
        path.display(),
        retired.join(", "),
        smaller.kids().len(),
        smaller.kids()[0]
    );
    Ok(retired)
}

/// `--owner` if given, else the owner of the file being replaced (none for a new file).
fn owner_for(path: &Path, write: &WriteArgs) -> Result<Option<Owner>> {
    match &write.owner {
        Some(spec) => Ok(Some(atomic::resolve_owner(spec)?)),
        None => Ok(atomic::owner_of(path)?),
    }
}

/// Reloads each server and checks it now signs with the file's signing key and holds none of
/// `retired`. Every server is tried; the command fails if any of them did not.
fn reload_all(
    urls: &[String],
    password_env: &str,
    keyring: Option<&Path>,
    retired: &[String],
) -> Result<()> {
    if urls.is_empty() {
        return Ok(());
    }
    let expected = match keyring {
        Some(path) => Some(read_ring(path)?.0.kids()[0].clone()),
        None => None,
    };
    let password = std::env::var(password_env).ok().map(Zeroizing::new);
    let mut failed = 0;
    for url in urls {
        match reload_one(url, password.as_deref().map(String::as_str), password_env) {
            Ok((shown, keys)) => {
                if let Some(problem) = check(&keys, expected.as_deref(), retired) {
                    eprintln!("reconcile-keyring: {shown}: {problem}");
                    failed += 1;
                } else {
                    println!("{shown}: reloaded; {}", describe(&keys));
                }
            }
            Err(err) => {
                eprintln!("reconcile-keyring: {err:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} servers did not take the keyring; they keep the keys they had. \
             Fix the cause and run `reconcile-keyring reload` again",
            urls.len()
        );
    }
    Ok(())
}

fn reload_one(
    url: &str,
    password: Option<&str>,
    password_env: &str,
) -> Result<(String, Vec<Listed>)> {
    let server = Server::new(url, password, password_env)?;
    let keys = server.reload()?;
    Ok((server.shown().to_string(), keys))
}

fn check(keys: &[Listed], expected: Option<&str>, retired: &[String]) -> Option<String> {
    let signing = keys
        .iter()
        .find(|k| k.role == "signing")
        .map(|k| k.kid.as_str());
    if let Some(expected) = expected {
        if signing != Some(expected) {
            return Some(format!(
                "signs with {} after the reload, not {expected}: its keyring file differs \
                 (each server reads its own; copy the file there)",
                signing.unwrap_or("nothing")
            ));
        }
    }
    let kept: Vec<&str> = keys
        .iter()
        .filter(|k| retired.contains(&k.kid))
        .map(|k| k.kid.as_str())
        .collect();
    if !kept.is_empty() {
        return Some(format!("still holds {} after the reload", kept.join(", ")));
    }
    None
}

fn describe(keys: &[Listed]) -> String {
    let parts: Vec<String> = keys
        .iter()
        .map(|k| format!("{} {} {}", k.kid, k.role, k.fingerprint))
        .collect();
    parts.join(", ")
}

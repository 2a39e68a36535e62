//! stowctl: the Stowage operators' tool.
//!
//! Settings come from the environment; when `.stowage/dev.env` (written by
//! `make dev`) exists in the current directory or above, it fills in whatever
//! the environment does not set, so the tool reaches the local stack as is.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "stowctl", about = "Operate a Stowage deployment", version)]
struct Cli {
    /// Settings file of a local stack (KEY=value lines).
    #[arg(long, global = true, env = "STOWAGE_ENV_FILE")]
    env_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a bearer token for USER, signed with the local stack's HS256
    /// secret (`STOWAGE_JWT_SECRET`). Real deployments use their identity
    /// provider's tokens instead.
    Token {
        /// The user id (the token's `sub`).
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
}

/// Finds `.stowage/dev.env` in the current directory or one of its parents.
fn default_env_file() -> Option<PathBuf> {
    let mut dir = std::env::current_dir().ok()?;
    loop {
        let candidate = dir.join(".stowage").join("dev.env");
        if candidate.is_file() {
            return Some(candidate);
        }
        if !dir.pop() {
            return None;
        }
    }
}

fn setting(name: &str, default: Option<&str>) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(value) => Ok(value),
        Err(_) => default.map(str::to_string).with_context(|| {
            format!("{name} is not set (start the local stack with `make dev`, or export it)")
        }),
    }
}

fn token(user: &str, ttl: i64) -> anyhow::Result<String> {
    let valid = (1..=128).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    anyhow::ensure!(valid, "user id must match ^[A-Za-z0-9_-]{{1,128}}$");
    anyhow::ensure!(ttl > 0, "--ttl must be positive");
    let secret = setting("STOWAGE_JWT_SECRET", None)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({
        "sub": user,
        "iss": setting("STOWAGE_JWT_ISSUER", Some("stowage-local"))?,
        "aud": setting("STOWAGE_JWT_AUDIENCE", Some("stowage"))?,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
    });
    Ok(encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(file) = cli.env_file.clone().or_else(default_env_file) {
        // Variables already set in the environment win over the file.
        dotenvy::from_path(&file).with_context(|| format!("cannot read {}", file.display()))?;
    }
    match cli.command {
        Command::Token { user, ttl } => println!("{}", token(&user, ttl)?),
    }
    Ok(())
}

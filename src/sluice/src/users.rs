//! `sluice users add`: a SCRAM credential (salt, iterations, derived keys: never the
//! password) stored in the data directory for the controller, which the node hands over
//! when it starts (before it serves, in a cluster of one): Kafka's `kafka-storage format
//! --add-scram`, so a first user exists before any client connects.

use std::path::PathBuf;
use std::process::ExitCode;

use sluice_broker::BrokerConfig;
use sluice_security::{ScramCredential, ScramMechanism};

#[derive(clap::Subcommand, Debug)]
pub enum UsersCommand {
    /// Store a SCRAM credential for the node to hand to the controller when it starts.
    Add(AddArgs),
}

#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// The broker's data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, value_name = "MECHANISM", value_parser = mechanism)]
    pub mechanism: ScramMechanism,
    /// The user's name (the principal is `User:NAME`).
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub name: String,
    /// The password (only derived keys are stored).
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub password: String,
    /// PBKDF2 iterations (at least 4096, Kafka's minimum).
    #[arg(long, value_name = "N", default_value_t = sluice_security::scram::ITERATIONS_MIN)]
    pub iterations: u32,
}

fn mechanism(v: &str) -> Result<ScramMechanism, String> {
    ScramMechanism::from_name(v).ok_or_else(|| format!("{v}: SCRAM-SHA-256 or SCRAM-SHA-512"))
}

pub fn run(command: UsersCommand) -> ExitCode {
    let UsersCommand::Add(args) = command;
    match add(args) {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice users add: {e}");
            ExitCode::from(2)
        }
    }
}

fn add(a: AddArgs) -> Result<String, String> {
    let data_dir = a
        .data_dir
        .unwrap_or_else(|| BrokerConfig::default().data_dir);
    let credential = ScramCredential::generate(a.mechanism, a.password.as_bytes(), a.iterations)?;
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    sluice_broker::scram_store::add_pending(
        &data_dir,
        sluice_broker::scram_store::record(&a.name, &credential),
    )?;
    Ok(format!(
        "sluice: {} credential of {} stored in {}; the node hands it to the controller when \
         it starts",
        a.mechanism.name(),
        a.name,
        data_dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Users {
        #[command(subcommand)]
        command: UsersCommand,
    }

    fn add_user(args: &str) -> Result<String, String> {
        let users = Users::try_parse_from(std::iter::once("users").chain(args.split_whitespace()))
            .map_err(|e| e.to_string())?;
        let UsersCommand::Add(a) = users.command;
        add(a)
    }

    #[test]
    fn users_add_stores_a_credential_and_checks_its_flags() {
        let dir = std::env::temp_dir().join(format!("sluice-users-{}", std::process::id()));
        let d = dir.display().to_string();
        let ok = add_user(&format!(
            "add --data-dir {d} --mechanism SCRAM-SHA-512 --name admin --password pw"
        ))
        .unwrap();
        assert!(ok.contains("SCRAM-SHA-512 credential of admin"), "{ok}");
        let stored = sluice_broker::scram_store::read_pending(&dir).unwrap();
        assert_eq!((stored[0].user.as_str(), stored[0].mechanism), ("admin", 2));
        for (bad, why) in [
            ("list", "unrecognized subcommand"),
            (
                "add --mechanism MD5 --name a --password p",
                "SCRAM-SHA-256 or",
            ),
            ("add --mechanism SCRAM-SHA-256 --password p", "--name"),
            ("add --mechanism SCRAM-SHA-256 --name a", "--password"),
            (
                "add --mechanism SCRAM-SHA-256 --name a --password p --iterations 10",
                "iterations 10",
            ),
        ] {
            let e = add_user(&format!("{bad} --data-dir {d}")).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

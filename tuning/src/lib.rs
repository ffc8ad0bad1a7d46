//! Host checks and tuners (`sluice tune --check`); filled in by the benchmark/tuning milestone.

use std::process::ExitCode;

/// Entry point of `sluice tune`.
pub fn main(args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("--check") => {
            println!("sluice tune: host checks are not implemented yet");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: sluice tune --check | --apply");
            ExitCode::from(2)
        }
    }
}

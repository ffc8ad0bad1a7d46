//! Progress of long commands (`topic produce` from a file, `topic consume -n COUNT`) with
//! indicatif: drawn on stderr only while stderr is a terminal, so a piped or scripted run
//! prints nothing extra, and cleared when the command ends.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Redraws per second: enough to look live, cheap beside the records it counts.
const REDRAWS_PER_SECOND: u8 = 4;

/// A counter of records `verb` (of `total`, when known), on stderr if it is a terminal.
/// `shown` false: a hidden bar (its updates cost next to nothing).
pub fn records(verb: &str, total: Option<u64>, shown: bool) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let target = ProgressDrawTarget::stderr_with_hz(REDRAWS_PER_SECOND);
    let bar = ProgressBar::with_draw_target(total, target);
    let template = match total {
        Some(_) => format!("{verb} {{human_pos}}/{{human_len}} records {{wide_bar}} {{eta}} left"),
        None => format!("{{spinner}} {verb} {{human_pos}} records in {{elapsed}}"),
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// Whether records printed on stdout would share the terminal with a bar on stderr.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

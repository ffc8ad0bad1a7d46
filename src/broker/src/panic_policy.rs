//! The process's panic policy: any panic ends the whole process at once, with a clear message.
//!
//! Why not let a shard die alone: a panic unwinds only the glommio thread it happens on. The
//! process would keep running with that shard gone: its partitions answer
//! `NOT_LEADER_OR_FOLLOWER` forever, shard 0's death stops every topic change, and a panic
//! before a shard reports ready leaves start-up waiting. A process that stops can be restarted
//! by its supervisor and recovers from disk like after `kill -9` (acknowledged data is fsynced;
//! recovery checks the tail). So the hook prints the panic (through the default hook, which
//! honours `RUST_BACKTRACE`) and aborts.
//!
//! One exception: a panic inside the vendored Kafka decoder (request bodies, and the stored
//! record batches that ListOffsets by timestamp decodes), which the codec runs under
//! `catch_unwind` and turns into a decode error ([`sluice_codec::panic_is_contained`]). It is
//! counted and logged as an error; the fuzz targets run the decoder without that net, so such
//! a panic is still found and fixed.

use std::sync::Once;

/// Environment switch for tests that prove the policy: `start` panics the last shard before
/// it reports ready; `request` panics the handler of any request whose client id is
/// [`TEST_PANIC_CLIENT_ID`]. Unset in production.
pub const TEST_PANIC_ENV: &str = "SLUICE_TEST_PANIC";
/// Client id that triggers the `request` test panic.
pub const TEST_PANIC_CLIENT_ID: &str = "sluice-test-panic";

/// Installs the hook (once per process; later calls do nothing).
pub fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if sluice_codec::panic_is_contained() {
                // The codec counts and logs it (as an error) when it catches it; here only
                // where it happened.
                log::debug!("contained decoder panic: {info}");
                return;
            }
            let thread = std::thread::current();
            eprintln!(
                "sluice: fatal: panic on thread {}; ending the process now (data on disk is \
                 recovered at the next start)",
                thread.name().unwrap_or("unnamed")
            );
            default(info);
            std::process::abort();
        }));
    });
}

/// Which test panic, if any, `SLUICE_TEST_PANIC` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestPanic {
    None,
    Start,
    Request,
}

/// Read once per process (the request path asks per request).
pub fn test_panic() -> TestPanic {
    static CHOICE: std::sync::OnceLock<TestPanic> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| match std::env::var(TEST_PANIC_ENV).as_deref() {
        Ok("start") => TestPanic::Start,
        Ok("request") => TestPanic::Request,
        _ => TestPanic::None,
    })
}

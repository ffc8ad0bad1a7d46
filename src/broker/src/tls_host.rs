//! TLS on the client listeners: the server configurations every shard hands its TLS
//! connections, the thread that reloads them (files changed, or SIGHUP), and the bounded
//! handshake of one accepted connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_rustls::rustls::ServerConfig;
use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use glommio::net::TcpStream;
use sluice_security::tls::{self, Reloader, TlsConfigs, TlsFiles};
use sluice_security::SecurityProtocol;

/// Longest a client may take over its TLS handshake. A connection still shaking hands
/// holds a connection slot and no request memory; this bounds how long a client that
/// connects and says nothing keeps the slot (the idle sweeper's limit is minutes).
pub const TLS_HANDSHAKE_MAX: Duration = Duration::from_secs(10);

/// How often the reloader looks at the certificate files.
pub const TLS_RELOAD_POLL: Duration = Duration::from_secs(1);

/// The current configurations, shared by every shard (read once per accepted connection).
pub struct TlsState {
    current: Mutex<TlsConfigs>,
}

impl TlsState {
    /// Loads `files` (the broker refuses to start when they do not load).
    pub fn load(files: &TlsFiles) -> Result<TlsState, String> {
        Ok(TlsState {
            current: Mutex::new(tls::load(files)?),
        })
    }

    /// The configuration for a new connection on a `listener` (a TLS one).
    pub fn config_for(&self, listener: SecurityProtocol) -> Arc<ServerConfig> {
        debug_assert!(listener.tls());
        let c = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match listener {
            SecurityProtocol::SaslSsl => c.sasl_ssl.clone(),
            _ => c.ssl.clone(),
        }
    }

    /// The configurations of a new node-to-node connection (`--rpc-tls`): accepting with
    /// the `ssl` listener's (client certificates required) and dialing with the node's
    /// client configuration. `None` without a CA.
    pub fn rpc_configs(
        &self,
    ) -> Option<(Arc<ServerConfig>, Arc<futures_rustls::rustls::ClientConfig>)> {
        let c = self.current.lock().unwrap_or_else(|e| e.into_inner());
        Some((c.ssl.clone(), c.node_client.clone()?))
    }

    fn replace(&self, configs: TlsConfigs) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = configs;
    }
}

/// Starts the thread that reloads `state` from `files` when they change (looked at every
/// [`TLS_RELOAD_POLL`]) or at once on SIGHUP. SIGHUP's handler (signal-hook) only writes a
/// byte to a socket pair this thread reads with the poll interval as its timeout, so any
/// thread may take the signal. Connections already open keep the configuration they were
/// accepted with.
pub fn spawn_reloader(files: TlsFiles, state: Arc<TlsState>) -> std::io::Result<()> {
    use std::io::Read;
    let (mut hups, wake) = std::os::unix::net::UnixStream::pair()?;
    hups.set_read_timeout(Some(TLS_RELOAD_POLL))?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, wake)?;
    let mut reloader = Reloader::new(files);
    std::thread::Builder::new()
        .name("sluice-tls-reload".into())
        .spawn(move || loop {
            // A byte: SIGHUP (several signals may come as one read); a timeout: the poll.
            let mut buf = [0u8; 64];
            let forced = matches!(hups.read(&mut buf), Ok(n) if n > 0);
            match reloader.poll(forced) {
                None => {}
                Some(Ok(configs)) => {
                    state.replace(configs);
                    log::info!(
                        "TLS certificates reloaded ({})",
                        if forced { "SIGHUP" } else { "files changed" }
                    );
                }
                Some(Err(e)) => {
                    log::error!("TLS certificates not reloaded, keeping the previous ones: {e}")
                }
            }
        })?;
    Ok(())
}

/// Runs the server side of a TLS handshake on `stream`, within [`TLS_HANDSHAKE_MAX`].
pub async fn handshake(
    config: Arc<ServerConfig>,
    stream: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    let accept = TlsAcceptor::from(config).accept(stream);
    let late = async {
        glommio::timer::sleep(TLS_HANDSHAKE_MAX).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("not done within {TLS_HANDSHAKE_MAX:?}"),
        ))
    };
    futures_lite::future::or(accept, late).await
}

//! A blocking Kafka client for the CLI: one TCP connection per broker (in TLS when asked),
//! an ApiVersions handshake then SASL authentication when asked, and typed requests and
//! responses through kafka-protocol (the same codec the broker decodes with). One request in flight per connection: a command
//! makes a handful of calls, so simplicity wins over pipelining.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use sluice_codec::kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse, RequestHeader,
    ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use sluice_codec::kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Request, StrBytes,
};

use crate::security::{Exchange, Sasl, Security, Stream};
use crate::CliError;

/// How long a connection attempt and each request may take before the command gives up
/// (librdkafka's `socket.timeout.ms` is 60 s; an operator at a terminal wants an answer
/// sooner, and every admin call here is answered in milliseconds by a healthy broker).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response frame accepted (a Metadata of many thousand partitions fits).
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;
const CLIENT_ID: &str = "sluice-cli";

/// One connection to one broker.
pub struct Conn {
    addr: String,
    stream: Stream,
    correlation: i32,
    /// The broker's supported versions by API key.
    versions: HashMap<i16, (i16, i16)>,
}

impl Conn {
    /// Connects to `addr` (`HOST:PORT`) and learns the broker's API versions.
    pub fn connect(addr: &str, security: &Security) -> Result<Conn, CliError> {
        let unreachable = |why: String| CliError(format!("cannot reach broker {addr}: {why}"));
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| unreachable(e.to_string()))?
            .collect();
        let mut last = String::from("no address");
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let stream = stream.ok_or_else(|| unreachable(last))?;
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| unreachable(e.to_string()))?;
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let stream = Stream::new(stream, host, security)?;
        let mut conn = Conn {
            addr: addr.to_string(),
            stream,
            correlation: 0,
            versions: HashMap::new(),
        };
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp: ApiVersionsResponse = conn.call_at(&req, 3)?;
        if resp.error_code != 0 {
            return Err(CliError(format!(
                "broker {addr}: ApiVersions failed: {}",
                crate::error_name(resp.error_code)
            )));
        }
        conn.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if let Some(sasl) = &security.sasl {
            conn.authenticate(sasl)?;
        }
        Ok(conn)
    }

    /// SaslHandshake for the mechanism, then SaslAuthenticate until the exchange is done.
    fn authenticate(&mut self, sasl: &Sasl) -> Result<(), CliError> {
        let mechanism = sasl.mechanism.name();
        let resp = self.call(
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)),
        )?;
        if resp.error_code != 0 {
            let enabled: Vec<String> = resp.mechanisms.iter().map(|m| m.to_string()).collect();
            return Err(CliError(format!(
                "broker {}: {mechanism}: {} (enabled: {})",
                self.addr,
                crate::error_name(resp.error_code),
                enabled.join(", ")
            )));
        }
        let mut exchange = Exchange::new(sasl);
        let mut message = Some(exchange.first());
        let mut round = 0;
        while let Some(bytes) = message.take() {
            round += 1;
            let resp = self.call(
                &SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from(bytes)),
            )?;
            if resp.error_code != 0 {
                return Err(CliError(format!(
                    "broker {}: {}",
                    self.addr,
                    crate::error_text(
                        resp.error_code,
                        resp.error_message.as_ref().map(|m| m.as_str())
                    )
                )));
            }
            message = exchange.next(&resp.auth_bytes, round)?;
        }
        Ok(())
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The highest version of `R` both sides speak.
    fn version<R: Request>(&self) -> Result<i16, CliError> {
        let ours = R::VERSIONS;
        let (min, max) = self.versions.get(&R::KEY).copied().ok_or_else(|| {
            CliError(format!(
                "broker {} does not support API key {}",
                self.addr,
                R::KEY
            ))
        })?;
        let v = max.min(ours.max);
        if v < min.max(ours.min) {
            return Err(CliError(format!(
                "broker {} speaks API key {} versions {min}..={max}; this CLI {}..={}",
                self.addr,
                R::KEY,
                ours.min,
                ours.max
            )));
        }
        Ok(v)
    }

    /// Sends `req` at the highest common version and waits for its response.
    pub fn call<R: Request>(&mut self, req: &R) -> Result<R::Response, CliError> {
        let v = self.version::<R>()?;
        self.call_at(req, v)
    }

    /// As [`Self::call`], with the request built for the version chosen: the encoder refuses
    /// a field the version does not have (a topic id before Fetch v13, FindCoordinator's
    /// batched keys before v4), so requests whose shape changed are built per version.
    pub fn call_with<R: Request>(
        &mut self,
        build: impl FnOnce(i16) -> R,
    ) -> Result<R::Response, CliError> {
        let v = self.version::<R>()?;
        self.call_at(&build(v), v)
    }

    /// Sends `req` and reads no response: a Produce with acks=0, which Kafka never answers.
    pub fn send_only<R: Request>(&mut self, build: impl FnOnce(i16) -> R) -> Result<(), CliError> {
        let v = self.version::<R>()?;
        self.write_request(&build(v), v)
    }

    fn call_at<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response, CliError> {
        self.write_request(req, version)?;
        self.read_response::<R>(version)
    }

    fn write_request<R: Request>(&mut self, req: &R, version: i16) -> Result<(), CliError> {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 4]);
        let encoded = header
            .encode(&mut buf, R::header_version(version))
            .and_then(|()| req.encode(&mut buf, version));
        encoded.map_err(|e| CliError(format!("encoding API key {}: {e}", R::KEY)))?;
        let len = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let io =
            |what: &str, e: std::io::Error| CliError(format!("broker {}: {what}: {e}", self.addr));
        self.stream
            .write_all(&buf)
            .map_err(|e| io("sending a request", e))
    }

    fn read_response<R: Request>(&mut self, version: i16) -> Result<R::Response, CliError> {
        let io =
            |what: &str, e: std::io::Error| CliError(format!("broker {}: {what}: {e}", self.addr));
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .map_err(|e| io("reading a response", e))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > RESPONSE_BYTES_MAX {
            return Err(CliError(format!(
                "broker {}: a {len}-byte response is over the {RESPONSE_BYTES_MAX}-byte limit",
                self.addr
            )));
        }
        let mut body = vec![0u8; len];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| io("reading a response", e))?;
        let mut body = bytes::Bytes::from(body);
        let undecodable = |e: &dyn std::fmt::Display| {
            CliError(format!(
                "broker {}: undecodable response to API key {} v{version}: {e}",
                self.addr,
                R::KEY
            ))
        };
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| undecodable(&e))?;
        if header.correlation_id != self.correlation {
            return Err(undecodable(&format!(
                "correlation id {} answered as {}",
                self.correlation, header.correlation_id
            )));
        }
        let resp = R::Response::decode(&mut body, version).map_err(|e| undecodable(&e))?;
        if body.has_remaining() {
            return Err(CliError(format!(
                "broker {}: {} bytes left after the response to API key {} v{version}",
                self.addr,
                body.remaining(),
                R::KEY
            )));
        }
        Ok(resp)
    }
}

/// The cluster as the CLI sees it: a bootstrap connection and, on demand, one connection
/// per broker the metadata names.
pub struct Client {
    security: Security,
    bootstrap: Conn,
    /// Kafka address of each broker, from the last metadata.
    nodes: HashMap<i32, String>,
    conns: HashMap<i32, Conn>,
}

impl Client {
    /// Connects to the first of `brokers` (comma-separated `HOST:PORT`) that answers.
    pub fn connect(brokers: &str, security: &Security) -> Result<Client, CliError> {
        let mut errors = Vec::new();
        for b in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            match Conn::connect(b, security) {
                Ok(bootstrap) => {
                    return Ok(Client {
                        security: security.clone(),
                        bootstrap,
                        nodes: HashMap::new(),
                        conns: HashMap::new(),
                    })
                }
                Err(e) => errors.push(e.0),
            }
        }
        if errors.is_empty() {
            return Err(CliError("--brokers names no broker".into()));
        }
        Err(CliError(errors.join("; ")))
    }

    /// Sends `req` to the bootstrap broker (admin requests: a broker forwards what the
    /// controller must decide).
    pub fn call<R: Request>(&mut self, req: &R) -> Result<R::Response, CliError> {
        self.bootstrap.call(req)
    }

    /// As [`Self::call`], built for the version chosen (see [`Conn::call_with`]).
    pub fn call_with<R: Request>(
        &mut self,
        build: impl FnOnce(i16) -> R,
    ) -> Result<R::Response, CliError> {
        self.bootstrap.call_with(build)
    }

    /// Sends `req` to broker `node` (a partition's leader).
    pub fn call_node<R: Request + Clone>(
        &mut self,
        node: i32,
        req: &R,
    ) -> Result<R::Response, CliError> {
        self.call_node_with(node, |_| req.clone())
    }

    /// Sends the request `build` makes for the version chosen to broker `node`.
    pub fn call_node_with<R: Request>(
        &mut self,
        node: i32,
        build: impl FnOnce(i16) -> R,
    ) -> Result<R::Response, CliError> {
        let result = self.conn(node)?.call_with(build);
        if result.is_err() {
            // The stream may hold half a frame: the next call dials afresh.
            self.conns.remove(&node);
        }
        result
    }

    /// Sends `req` to broker `node` without waiting for an answer (see [`Conn::send_only`]).
    pub fn send_node<R: Request>(
        &mut self,
        node: i32,
        build: impl FnOnce(i16) -> R,
    ) -> Result<(), CliError> {
        self.conn(node)?.send_only(build)
    }

    fn conn(&mut self, node: i32) -> Result<&mut Conn, CliError> {
        if !self.conns.contains_key(&node) {
            let addr = self.nodes.get(&node).cloned().ok_or_else(|| {
                CliError(format!("broker {node} is not in the cluster's metadata"))
            })?;
            let conn = Conn::connect(&addr, &self.security)?;
            self.conns.insert(node, conn);
        }
        Ok(self.conns.get_mut(&node).expect("inserted above"))
    }

    /// Metadata of `topics` (`None`: every topic), remembering the brokers' addresses.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse, CliError> {
        use sluice_codec::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        use sluice_codec::kafka_protocol::messages::TopicName;
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let resp = self.call(&req)?;
        self.nodes = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        Ok(resp)
    }
}

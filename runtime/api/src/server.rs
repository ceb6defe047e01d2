//! Serving the API: the four services behind the token check, plus the standard
//! `grpc.health.v1` and server reflection (open, for probes and `grpcurl`).

use std::future::Future;

use sluice_engine::Engine;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;

use crate::auth::Tokens;
use crate::connections::ConnectionsApi;
use crate::connectors::ConnectorsApi;
use crate::nodes::NodesApi;
use crate::pb::connections_server::ConnectionsServer;
use crate::pb::connectors_server::ConnectorsServer;
use crate::pb::nodes_server::NodesServer;
use crate::pb::rate_limits_server::RateLimitsServer;
use crate::pb::records_server::RecordsServer;
use crate::pb::runs_server::RunsServer;
use crate::pb::workflows_server::WorkflowsServer;
use crate::rate_limits::RateLimitsApi;
use crate::records::RecordsApi;
use crate::runs::RunsApi;
use crate::workflows::WorkflowsApi;

/// Accepted connections with Nagle's algorithm off: a response is written in a few
/// frames, and waiting for the peer's delayed ACK before the last one added ~40 ms to
/// every larger answer.
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted
            && let Err(e) = stream.set_nodelay(true)
        {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        accepted
    })
}

/// The largest component a client may register (Python and JavaScript components
/// bundle their interpreter: tens of MB): the `Connectors` service's decoding limit.
pub const MAX_COMPONENT_BYTES: usize = 128 << 20;
/// The largest request every other service decodes (definitions are JSON of a few
/// KiB; tonic's default).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// The largest answer the server encodes. List answers are paged far below it (a
/// page ends before 3 MiB of items); a single run with its events is what may grow.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// The largest answer a client of this crate should decode (the CLI sets it): the
/// server's encoding limit, so whatever the server sends can be read.
pub const CLIENT_MAX_DECODING_BYTES: usize = MAX_RESPONSE_BYTES;

/// A generated service with the request and answer size limits.
macro_rules! limited {
    ($service:expr) => {
        $service
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES)
    };
}

/// Why the server stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service cannot read the API's descriptors.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The control API of one node.
#[derive(Clone)]
pub struct ApiServer {
    engine: Engine,
    tokens: Tokens,
    tls: Option<Tls>,
}

/// A server certificate (chain) and its private key, PEM.
#[derive(Clone)]
pub struct Tls {
    /// The certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// The private key, PEM.
    pub key_pem: Vec<u8>,
}

impl ApiServer {
    /// The API over `engine`, accepting `tokens` (none: open), in plaintext.
    pub fn new(engine: Engine, tokens: Tokens) -> Self {
        ApiServer {
            engine,
            tokens,
            tls: None,
        }
    }

    /// Serves over TLS with this certificate (rustls).
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        if !self.tokens.enabled() {
            tracing::warn!(
                "the API accepts every caller: no API token is configured (set tokens to require one)"
            );
        }
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_serving::<ConnectionsServer<ConnectionsApi>>()
            .await;
        reporter
            .set_serving::<ConnectorsServer<ConnectorsApi>>()
            .await;
        reporter
            .set_serving::<WorkflowsServer<WorkflowsApi>>()
            .await;
        reporter.set_serving::<RunsServer<RunsApi>>().await;
        reporter.set_serving::<RecordsServer<RecordsApi>>().await;
        reporter
            .set_serving::<RateLimitsServer<RateLimitsApi>>()
            .await;
        reporter.set_serving::<NodesServer<NodesApi>>().await;
        // Both reflection versions: grpcurl before 1.9 and many tools speak v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let engine = self.engine;
        let check = |tokens: Tokens| move |req| tokens.check(req);
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &self.tls {
            let identity = tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem);
            builder =
                builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
        } else if self.tokens.enabled() {
            tracing::warn!("API tokens travel in plaintext: configure TLS outside loopback");
        }
        builder
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(InterceptedService::new(
                ConnectorsServer::new(ConnectorsApi {
                    engine: engine.clone(),
                })
                .max_decoding_message_size(MAX_COMPONENT_BYTES)
                .max_encoding_message_size(MAX_RESPONSE_BYTES),
                check(self.tokens.clone()),
            ))
            .add_service(InterceptedService::new(
                limited!(ConnectionsServer::new(ConnectionsApi {
                    engine: engine.clone(),
                })),
                check(self.tokens.clone()),
            ))
            .add_service(InterceptedService::new(
                limited!(WorkflowsServer::new(WorkflowsApi {
                    engine: engine.clone(),
                })),
                check(self.tokens.clone()),
            ))
            .add_service(InterceptedService::new(
                limited!(RunsServer::new(RunsApi {
                    engine: engine.clone(),
                })),
                check(self.tokens.clone()),
            ))
            .add_service(InterceptedService::new(
                limited!(RecordsServer::new(RecordsApi {
                    engine: engine.clone(),
                })),
                check(self.tokens.clone()),
            ))
            .add_service(InterceptedService::new(
                limited!(RateLimitsServer::new(RateLimitsApi {
                    engine: engine.clone(),
                })),
                check(self.tokens.clone()),
            ))
            .add_service(InterceptedService::new(
                limited!(NodesServer::new(NodesApi { engine })),
                check(self.tokens),
            ))
            .serve_with_incoming_shutdown(incoming(listener), shutdown)
            .await?;
        Ok(())
    }
}

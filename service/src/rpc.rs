//! What happens around every call, as one tower layer in front of all the services (log,
//! health, reflection): who the caller is and whether it may call (the `auth` module), a
//! tracing span, and the call's metrics.
//!
//! The span `rpc` carries `method`, `peer` and `subject` from the start, so the handlers'
//! own events show them, and `code` and `latency_us` once the call ends. A call ends when its
//! gRPC status is known: in the response headers for a refused or failed call, in the
//! trailers for a finished stream; a stream the client drops first ends as `Cancelled`. The
//! end is logged once (`call finished`), at `debug` for the normal ends (OK, `OUT_OF_RANGE`
//! at the end of the log, `CANCELLED`), `warn` for a server-side failure, and `info` for the
//! rest (refusals, bad requests), and counted in the metrics.
//!
//! A layer rather than an interceptor because interceptors see neither the method nor the
//! final status of a stream.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http_body::Frame;
use tonic::{Code, body::Body};
use tower_service::Service;
use tracing::{Instrument, Span, debug, field, info, info_span, warn};

use crate::{
    auth::{Caller, Policy},
    metrics::Metrics,
};

/// The layer.
#[derive(Clone, Debug)]
pub(crate) struct RpcLayer {
    policy: Arc<Policy>,
    metrics: Arc<Metrics>,
}

impl RpcLayer {
    pub(crate) fn new(policy: Policy, metrics: Arc<Metrics>) -> RpcLayer {
        RpcLayer { policy: Arc::new(policy), metrics }
    }
}

impl<S> tower_layer::Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Rpc<S> {
        Rpc { inner, policy: self.policy.clone(), metrics: self.metrics.clone() }
    }
}

/// The layer's service.
#[derive(Clone, Debug)]
pub(crate) struct Rpc<S> {
    inner: S,
    policy: Arc<Policy>,
    metrics: Arc<Metrics>,
}

/// The services and methods that metrics are labelled with; anything else is `unknown`, so
/// that clients cannot grow the label set.
const KNOWN_SERVICES: [&str; 4] = [
    "log.v1.Log",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// A call's `(service, method)` from its path, `/log.v1.Log/Produce`.
fn method_of(path: &str) -> (&'static str, String) {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("", ""));
    match KNOWN_SERVICES.iter().find(|known| **known == service) {
        Some(known)
            if !method.is_empty() && method.len() <= 64 && method.chars().all(char::is_alphanumeric) =>
        {
            (known, method.to_owned())
        }
        _ => ("unknown", "unknown".to_owned()),
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> Service<http::Request<Body>> for Rpc<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        let caller = Caller::of(request.extensions());
        let span = info_span!(
            "rpc",
            method = %path,
            peer = field::display(caller.peer.map_or_else(|| "-".to_owned(), |p| p.to_string())),
            subject = caller.name(),
            code = field::Empty,
            latency_us = field::Empty,
        );
        let forwarded = request.headers().contains_key(crate::cluster::FORWARDED);
        let checked = self.policy.check(&caller, &path, forwarded);
        let (service, method) = method_of(&path);
        let end =
            End { metrics: self.metrics.clone(), service, method, started, span: span.clone(), done: false };
        // The clone is the one that is ready: take it, and leave the fresh clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(
            async move {
                if let Err(status) = checked {
                    end.finish(status.code());
                    return Ok(status.into_http());
                }
                let response = match inner.call(request).await {
                    Ok(response) => response,
                    Err(error) => {
                        end.finish(Code::Unknown);
                        return Err(error);
                    }
                };
                if let Some(code) = response.headers().get("grpc-status") {
                    end.finish(Code::from_bytes(code.as_bytes()));
                    return Ok(response);
                }
                Ok(response.map(|body| Body::new(Watched { inner: body, end: Some(end) })))
            }
            .instrument(span),
        )
    }
}

/// Records the end of a call once: on [`End::finish`], or as `Cancelled` when dropped first.
struct End {
    metrics: Arc<Metrics>,
    service: &'static str,
    method: String,
    started: Instant,
    span: Span,
    done: bool,
}

impl End {
    fn finish(mut self, code: Code) {
        self.record(code);
    }

    fn record(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let latency = self.started.elapsed();
        self.metrics.call_finished(self.service, &self.method, code, latency);
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.span.record("code", field::debug(code));
        self.span.record("latency_us", latency_us);
        log_end(&self.span, code, latency);
    }
}

fn log_end(span: &Span, code: Code, latency: Duration) {
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    match code {
        // The normal ends: success, the end of the log for a reader, a client that left.
        Code::Ok | Code::OutOfRange | Code::Cancelled => {
            debug!(parent: span, ?code, latency_us, "call finished")
        }
        Code::Unknown | Code::Internal | Code::Unavailable | Code::DataLoss | Code::ResourceExhausted => {
            warn!(parent: span, ?code, latency_us, "call finished")
        }
        _ => info!(parent: span, ?code, latency_us, "call finished"),
    }
}

impl Drop for End {
    fn drop(&mut self) {
        self.record(Code::Cancelled);
    }
}

/// A response body that reports the status in its trailers when they go by.
struct Watched {
    inner: Body,
    end: Option<End>,
}

impl http_body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                    let code = Code::from_bytes(code.as_bytes());
                    if let Some(end) = self.end.take() {
                        end.finish(code);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(end) = self.end.take() {
                    end.finish(Code::Unknown);
                }
            }
            Poll::Ready(None) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_methods_become_labels() {
        assert_eq!(method_of("/log.v1.Log/Produce"), ("log.v1.Log", "Produce".to_owned()));
        assert_eq!(method_of("/grpc.health.v1.Health/Check"), ("grpc.health.v1.Health", "Check".to_owned()));
        assert_eq!(method_of("/evil.Service/Produce"), ("unknown", "unknown".to_owned()));
        assert_eq!(method_of("/log.v1.Log/x{y}"), ("unknown", "unknown".to_owned()));
        assert_eq!(method_of("/"), ("unknown", "unknown".to_owned()));
    }
}

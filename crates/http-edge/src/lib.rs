//! # http-edge
//!
//! What Shotledger's two HTTP programs (the api-server and the webhook-receiver, both
//! reachable from the internet) share at the socket:
//!
//! - [`codec_errors`]: the answers actix-http's HTTP/1 parser gives by itself (`431` head
//!   too large, `400` unparsable, `408` head not received in time) leave as the contract's
//!   JSON errors instead of empty bodies;
//! - [`SECURITY_HEADERS`], which those answers carry (the api-server puts them on every
//!   answer of its own too);
//! - [`h1`], the HTTP/1 service for one listener that runs an actix-web `App` over
//!   [`CodecErrorsIo`]-wrapped sockets, and [`serve`], a whole server of it (what
//!   `actix_web::HttpServer` does, HTTP/1 only, with the wrapper).

pub mod codec_errors;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_service::{IntoServiceFactory as _, ServiceFactory, ServiceFactoryExt as _};
use actix_web::body::MessageBody;
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::rt::net::TcpStream;
use actix_web::App;

pub use crate::codec_errors::{CodecErrorsIo, RequestMethods};

/// The headers put on every answer (names in lower case): by the api-server's
/// `security_headers` middleware, and by [`CodecErrorsIo`] on the parser's answers.
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("x-content-type-options", "nosniff"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

/// The HTTP/1 limits of a connection.
#[derive(Debug, Clone, Copy)]
pub struct H1Limits {
    /// An idle keep-alive connection closes after this.
    pub keep_alive: Duration,
    /// The request head must arrive within this (else the JSON `408`).
    pub client_request_timeout: Duration,
    /// How long a closing connection waits for the client to close its side.
    pub client_disconnect_timeout: Duration,
}

impl Default for H1Limits {
    /// actix-web's `HttpServer` defaults: 5 s, 5 s, 1 s.
    fn default() -> H1Limits {
        H1Limits {
            keep_alive: Duration::from_secs(5),
            client_request_timeout: Duration::from_secs(5),
            client_disconnect_timeout: Duration::from_secs(1),
        }
    }
}

/// Declares a trait `$name<$b>` that stands for `$bounds`, implemented for every type
/// that meets them: one place for a bound list several functions share.
macro_rules! bound_alias {
    ($(#[$doc:meta])* $name:ident<$b:ident> = $($bounds:tt)+) => {
        $(#[$doc])*
        pub trait $name<$b>: $($bounds)+ {}
        impl<T, $b> $name<$b> for T where T: $($bounds)+ {}
    };
}

bound_alias! {
    /// What an actix-web `App<T>` is built over: the bounds [`h1`] and [`serve`] put on `T`.
    AppFactory<B> = ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<B>,
        Error = actix_web::Error,
        InitError = (),
    > + 'static
}

/// Notes each request's method for the connection's [`CodecErrorsIo`] (outermost, so every
/// request that reaches the app is noted, in order).
async fn note_method<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: actix_web::middleware::Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    if let Some(methods) = req.conn_data::<RequestMethods>() {
        methods.push(req.method());
    }
    next.call(req).await
}

/// The HTTP/1 service for one listener at `local_addr`, to be built on each worker (in the
/// closure given to `actix_server::ServerBuilder::listen`): each accepted socket is wrapped
/// in a [`CodecErrorsIo`], and `app` runs over it. `stopping` tells each connection when
/// the server stops (an idle keep-alive connection then closes at once); `on_connect` may
/// add the caller's own data to each connection.
pub fn h1<T, B>(
    app: App<T>,
    local_addr: SocketAddr,
    limits: H1Limits,
    stopping: actix_server::GracefulShutdownSignal,
    on_connect: impl Fn(&mut Extensions) + 'static,
) -> impl ServiceFactory<
    TcpStream,
    Config = (),
    Response = (),
    Error = actix_http::error::DispatchError,
    InitError = (),
>
where
    T: AppFactory<B>,
    B: MessageBody + 'static,
{
    let app = app
        .wrap(actix_web::middleware::from_fn(note_method))
        .into_factory()
        .map_err(|e: actix_web::Error| e.error_response());
    let timeout_secs = limits.client_request_timeout.as_secs();
    let service = actix_http::HttpService::build()
        .graceful_shutdown_signal(move || {
            let stopping = stopping.clone();
            async move { stopping.notified().await }
        })
        .keep_alive(limits.keep_alive)
        .client_request_timeout(limits.client_request_timeout)
        .client_disconnect_timeout(limits.client_disconnect_timeout)
        .h1_allow_half_closed(true)
        .local_addr(local_addr)
        .on_connect_ext(move |io: &CodecErrorsIo<TcpStream>, data| {
            data.insert(io.methods());
            on_connect(data);
        })
        .h1(actix_service::map_config(app, |_| {
            actix_web::dev::AppConfig::default()
        }));
    actix_service::fn_service(move |io: TcpStream| async move {
        let peer = io.peer_addr().ok();
        Ok::<_, actix_http::error::DispatchError>((CodecErrorsIo::new(io, timeout_secs), peer))
    })
    .and_then(service)
}

/// How [`serve`] runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Names the listeners' services (in actix's logs): `{name}-{addr}`.
    pub name: String,
    /// HTTP workers; `None`: actix's default (one per CPU).
    pub workers: Option<usize>,
    /// A stop lets requests in flight finish for up to this many seconds.
    pub shutdown_timeout_secs: u64,
    /// Whether SIGTERM (graceful), SIGINT and SIGQUIT stop the server (actix's handling).
    pub handle_signals: bool,
    pub limits: H1Limits,
}

/// Serves the app `factory` makes (once per worker and listener) on `listeners`, over
/// [`h1`]: what `actix_web::HttpServer::new(factory).listen(..).run()` does, HTTP/1 only,
/// with the parser's answers as JSON.
pub fn serve<F, T, B>(
    listeners: Vec<TcpListener>,
    config: ServeConfig,
    factory: F,
) -> std::io::Result<actix_server::Server>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: AppFactory<B>,
    B: MessageBody + 'static,
{
    let mut builder = actix_server::Server::build()
        .backlog(1024)
        .shutdown_timeout(config.shutdown_timeout_secs);
    if let Some(workers) = config.workers {
        builder = builder.workers(workers);
    }
    if !config.handle_signals {
        builder = builder.disable_signals();
    }
    let stopping = builder.graceful_shutdown_signal();
    for listener in listeners {
        let addr = listener.local_addr()?;
        let (factory, stopping, limits) = (factory.clone(), stopping.clone(), config.limits);
        builder = builder.listen(format!("{}-{addr}", config.name), listener, move || {
            h1(factory(), addr, limits, stopping.clone(), |_| {})
        })?;
    }
    Ok(builder.run())
}

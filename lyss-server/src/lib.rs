//! # lyss-server
//!
//! The HTTP face of lyss-core: an OpenAI-compatible API (`/v1/chat/completions`,
//! `/v1/models`, `/v1/embeddings`), admin routes behind the admin token, and health checks.
//! HTTP concerns (CORS, body limit, request ids, tracing, graceful shutdown) live here as tower
//! layers; every business stage lives in [`lyss_core::pipeline`].

mod dashboard;
pub mod error;
#[cfg(feature = "otel")]
mod otel;
pub mod routes;
pub mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Method};
use axum::routing::{get, post};
use lyss_core::Lyss;
use lyss_core::config::{Config, LogFormat, Secret};
use lyss_core::setup::{self, AdminTokenSource, Overrides};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// `lyss-server` command-line flags.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "lyss-server",
    version,
    about = "Lyss: a self-hosted, cost-first, OpenAI-compatible LLM gateway"
)]
pub struct Args {
    /// Configuration file (TOML). Default: ./lyss.toml if present.
    #[arg(long, env = "LYSS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (SQLite file, admin token).
    #[arg(long, env = "LYSS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Governance store URL (default: sqlite://<data-dir>/lyss.db).
    #[arg(long, env = "LYSS_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "LYSS_BIND")]
    pub bind: Option<SocketAddr>,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub lyss: Arc<Lyss>,
    pub admin_token: Arc<Secret>,
    pub body_limit: usize,
    /// Failed key checks allowed per client address and minute (0: no limit).
    pub auth_failures_per_minute: u32,
    /// Whether metrics are recorded (and served at `/metrics`).
    pub metrics: bool,
    /// The bearer token `/metrics` requires, if any.
    pub metrics_token: Option<Arc<Secret>>,
}

/// The whole HTTP app for a pipeline.
pub fn router(state: AppState, cors_origins: &[String]) -> Router {
    // Installed before the first request, so that nothing goes unrecorded. Without a recorder
    // every metric call is a no-op.
    if state.metrics {
        routes::metrics::handle();
    }
    let x_request_id = HeaderName::from_static("x-request-id");
    let admin = Router::new()
        .route(
            "/admin/workspaces",
            get(routes::admin::list_workspaces).post(routes::admin::create_workspace),
        )
        .route(
            "/admin/workspaces/{workspace}",
            axum::routing::patch(routes::admin::update_workspace),
        )
        .route(
            "/admin/users",
            get(routes::admin::list_users).post(routes::admin::create_user),
        )
        .route(
            "/admin/keys",
            get(routes::admin::list_keys).post(routes::admin::create_key),
        )
        .route("/admin/keys/{id}/revoke", post(routes::admin::revoke_key))
        .route("/admin/ledger", get(routes::admin::ledger))
        .route("/admin/usage", get(routes::admin::usage))
        .route(
            "/admin/budgets",
            get(routes::admin::list_budgets).post(routes::admin::set_budget),
        )
        .route(
            "/admin/budgets/{id}",
            axum::routing::delete(routes::admin::delete_budget),
        )
        .route("/admin/limits", post(routes::admin::set_limit))
        .route("/admin/models", get(routes::admin::models))
        .route(
            "/admin/cache",
            get(routes::admin::cache_stats).delete(routes::admin::cache_clear),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::admin::require_admin,
        ));
    // The MCP layer sees only callers whose key checks out.
    let mcp = Router::new()
        .route_service("/mcp", routes::mcp::service(state.clone()))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::mcp::authenticate,
        ));
    let api = Router::new()
        .route("/v1/chat/completions", post(routes::chat::completions))
        .route("/v1/messages", post(routes::messages::create))
        .route("/v1/responses", post(routes::responses::create))
        .route(
            "/v1/responses/{id}",
            get(routes::responses::retrieve).delete(routes::responses::delete),
        )
        .route("/v1/models", get(routes::models::list))
        // Model ids may hold slashes (`org/model`).
        .route("/v1/models/{*id}", get(routes::models::retrieve))
        .route("/v1/embeddings", post(routes::embeddings::create))
        .route(
            "/v1/memories",
            get(routes::memories::list_or_search)
                .post(routes::memories::add)
                .delete(routes::memories::forget),
        )
        .route(
            "/v1/memories/{id}",
            get(routes::memories::get)
                .patch(routes::memories::update)
                .delete(routes::memories::delete),
        )
        .route("/v1/memories/page", post(routes::memories::page_link))
        .route("/v1/memories/{id}/history", get(routes::memories::history))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::metrics::render))
        .merge(admin)
        .merge(mcp)
        .fallback(|| async { error::ApiError(lyss_core::Error::NotFound("route".into())) })
        // Browsers may call the API from other origins (LobeChat in client mode); never the
        // dashboard, whose pages also forbid framing and caching (`dashboard::headers`).
        .layer(cors(cors_origins));
    api.merge(dashboard::routes())
        .layer(axum::middleware::from_fn(error::openai_shaped))
        .layer(DefaultBodyLimit::max(state.body_limit))
        .layer(axum::middleware::from_fn_with_state(
            routes::throttle::AuthThrottle::new(state.auth_failures_per_minute),
            routes::throttle::limit,
        ))
        .layer(axum::middleware::from_fn(routes::metrics::track))
        .with_state(state)
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
}

/// CORS for browser clients (LobeChat in client mode, web apps). Request headers are mirrored
/// — a `*` would not cover `Authorization` — and credentials are never allowed.
fn cors(origins: &[String]) -> CorsLayer {
    let origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-lyss-prompt-tokens-original"),
            HeaderName::from_static("x-lyss-prompt-tokens-sent"),
            HeaderName::from_static("x-lyss-cache"),
            HeaderName::from_static("x-lyss-cache-similarity"),
            HeaderName::from_static("x-lyss-budget-remaining"),
        ])
        .max_age(Duration::from_secs(3600))
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    #[cfg(feature = "otel")]
    let registry = registry.with(otel::layer());
    let _ = registry.try_init();
}

/// Runs the server as the binary does: a failure to start is one line on stderr (the reason and
/// its causes) and a failing exit code, not a debug dump.
pub async fn main(args: Args) -> std::process::ExitCode {
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lyss-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Loads config, builds the pipeline and serves until SIGINT/SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = setup::load_config(&Overrides {
        config: args.config,
        data_dir: args.data_dir,
        database_url: args.database_url,
        bind: args.bind,
    })?;
    init_tracing(config.log_format);
    let lyss = Arc::new(setup::build(&config).await?);
    setup::spawn_reaper(lyss.clone());
    if lyss.memory().is_some() {
        setup::spawn_ingest(lyss.clone());
    }
    // Budgets need prompt counts: build the tokenizers before the first request needs them.
    if !lyss
        .policy()
        .budgets(time::OffsetDateTime::now_utc())
        .await?
        .is_empty()
    {
        tokio::task::spawn_blocking(lyss_core::tokens::warm_up);
    }
    let (admin_token, source) = setup::admin_token(&config)?;
    announce(&config, &lyss, &source);
    let state = AppState {
        lyss,
        admin_token: Arc::new(admin_token),
        body_limit: config.body_limit,
        auth_failures_per_minute: config.auth_failures_per_minute,
        metrics: config.metrics,
        metrics_token: config.metrics_token.clone().map(Arc::new),
    };
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e} (set --bind or LYSS_BIND)",
                config.bind
            )
        })?;
    tracing::info!(addr = %listener.local_addr()?, "lyss-server listening");
    serve::serve(
        listener,
        router(state, &config.cors_origins),
        serve::Limits {
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs.max(1)),
            max_header_bytes: config.max_header_bytes,
        },
        shutdown_signal(),
    )
    .await;
    tracing::info!("lyss-server stopped");
    #[cfg(feature = "otel")]
    otel::flush();
    Ok(())
}

/// Tells a first-time operator where things are and what to do next.
fn announce(config: &Config, lyss: &Lyss, source: &AdminTokenSource) {
    let data_dir = setup::data_dir(config);
    tracing::info!(data_dir = %data_dir.display(), database = %setup::database_url(config), "store opened");
    match source {
        AdminTokenSource::Generated(p) => {
            tracing::info!(path = %p.display(), "generated an admin token (mode 0600)")
        }
        AdminTokenSource::File(p) => tracing::info!(path = %p.display(), "admin token read"),
        AdminTokenSource::Config => tracing::info!("admin token from configuration"),
    }
    if lyss.models().is_empty() {
        tracing::warn!(
            "no models configured: set OPENAI_API_KEY or OLLAMA_BASE_URL, or add [[providers]] and [[models]] to lyss.toml (see docs/configuration.md)"
        );
    } else {
        let names: Vec<_> = lyss.models().iter().map(|m| m.name.as_str()).collect();
        tracing::info!(models = %names.join(", "), "models");
    }
    let dd = config
        .data_dir
        .as_ref()
        .map(|d| format!(" --data-dir {}", d.display()))
        .unwrap_or_default();
    eprintln!(
        "\nCreate a first key:\n  lyss{dd} workspace create team --models '*'\n  lyss{dd} user create me --workspace team\n  lyss{dd} key create --user me\n"
    );
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

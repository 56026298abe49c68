//! Fake upstreams that `wiremock` cannot play, served on loopback: streams that take their time
//! (a load's pacing, a client that hangs up), a fixed answer to every chat for the benchmarks
//! (which keep every body sent), and whatever router a test builds of its own.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use serde_json::{Value, json};

/// What [`recording`] answers to every chat request.
pub const ANSWER: &str = "Noted.";

/// Serves `app` on loopback `port` (0: any free one); its base URL, `http://127.0.0.1:PORT/v1`.
pub async fn serve(app: axum::Router, port: u16) -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A server-sent-event response of these `data:` payloads (chunks as JSON, then `[DONE]`), each
/// sent `gap` after the one before.
pub fn sse(
    events: impl Stream<Item = String> + Send + 'static,
    gap: Duration,
) -> axum::response::Response {
    let body = events.then(move |data| async move {
        tokio::time::sleep(gap).await;
        Ok::<_, Infallible>(format!("data: {data}\n\n"))
    });
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from_stream(body))
        .unwrap()
}

/// An OpenAI upstream on loopback `port` (0: any) that answers every chat request at once with
/// [`ANSWER`] (usage: 1 prompt token, 2 completion) and keeps each request's body. Its base URL
/// and the bodies, in the order they came.
pub async fn recording(port: u16) -> (String, Arc<Mutex<Vec<Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let chat = move |axum::Json(body): axum::Json<Value>| {
        let kept = kept.clone();
        async move {
            let model = body["model"].as_str().unwrap_or_default().to_owned();
            kept.lock().unwrap().push(body);
            let mut answer = crate::openai::completion(&model, ANSWER);
            answer["usage"] =
                json!({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3});
            axum::Json(answer)
        }
    };
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat));
    (serve(app, port).await, bodies)
}

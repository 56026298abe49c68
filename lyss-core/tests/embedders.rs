//! The embedder conformance suite against every embedder: the deterministic hash embedder, the
//! real local model (all-MiniLM-L6-v2, int8 weights through ONNX Runtime, built by
//! `scripts/fetch-models.sh`; required when `CI=true`), an OpenAI-compatible `/v1/embeddings`
//! faked with wiremock, and the wrappers the server puts around them (cached, loaded lazily).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

#[cfg(feature = "local-embeddings")]
use lyss_core::embed::cosine;
use lyss_core::embed::{Embedder, OpenAiEmbedder};

mod hash {
    lyss_core::embedder_conformance!(async {
        Some(std::sync::Arc::new(lyss_core::embed::HashEmbedder::new(64))
            as std::sync::Arc<dyn lyss_core::embed::Embedder>)
    });
}

mod cached {
    lyss_core::embedder_conformance!(async {
        let inner = std::sync::Arc::new(lyss_core::embed::HashEmbedder::new(64));
        Some(
            std::sync::Arc::new(lyss_core::embed::CachedEmbedder::new(inner, 1 << 20))
                as std::sync::Arc<dyn lyss_core::embed::Embedder>,
        )
    });
}

mod lazy {
    lyss_core::embedder_conformance!(async {
        let load: lyss_core::embed::Load = Box::new(|| {
            Box::pin(async {
                Ok(std::sync::Arc::new(lyss_core::embed::HashEmbedder::new(64))
                    as std::sync::Arc<dyn lyss_core::embed::Embedder>)
            })
        });
        Some(
            std::sync::Arc::new(lyss_core::embed::LazyEmbedder::new("hash-64", 64, load))
                as std::sync::Arc<dyn lyss_core::embed::Embedder>,
        )
    });
}

mod openai {
    lyss_core::embedder_conformance!(super::openai_embedder());
}

/// An upstream `/v1/embeddings` that embeds each input by its bytes (4 dimensions,
/// deterministic, never zero), in the order OpenAI's API answers: by `index`, reversed here.
struct ByBytes;

impl wiremock::Respond for ByBytes {
    fn respond(&self, req: &wiremock::Request) -> wiremock::ResponseTemplate {
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        let inputs: Vec<String> = match &body["input"] {
            serde_json::Value::String(s) => vec![s.clone()],
            other => serde_json::from_value(other.clone()).unwrap(),
        };
        let mut data: Vec<serde_json::Value> = inputs
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let b = text.as_bytes();
                let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
                let embedding = [
                    1.0,
                    b.len() as f32,
                    (sum % 97) as f32,
                    f32::from(b.first().copied().unwrap_or(0)),
                ];
                serde_json::json!({"object": "embedding", "index": index, "embedding": embedding})
            })
            .collect();
        data.reverse();
        wiremock::ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"object": "list", "model": "m", "data": data}))
    }
}

/// The OpenAI-compatible embedder in front of [`ByBytes`] (the fake upstream lives as long as
/// the test process).
async fn openai_embedder() -> Option<Arc<dyn Embedder>> {
    let upstream = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/v1/embeddings"))
        .respond_with(ByBytes)
        .mount(&upstream)
        .await;
    let upstream: &'static wiremock::MockServer = Box::leak(Box::new(upstream));
    Some(Arc::new(OpenAiEmbedder::new(provider(upstream), "m", 4)))
}

#[cfg(feature = "local-embeddings")]
mod local {
    lyss_core::embedder_conformance!(lyss_core::testing::services::local_embedder());
}

#[cfg(feature = "local-embeddings")]
#[tokio::test]
async fn the_local_model_puts_paraphrases_close_and_unrelated_text_far() {
    let Some(e) = lyss_core::testing::services::local_embedder().await else {
        return;
    };
    assert_eq!(e.dimension(), 384);
    let v = e
        .embed(&[
            "I am a Python developer and I like short answers.".to_string(),
            "I write Python for a living; keep replies brief.".to_string(),
            "The train to Lyon leaves at nine in the morning.".to_string(),
        ])
        .await
        .expect("embed");
    let close = cosine(&v[0], &v[1]);
    let far = cosine(&v[0], &v[2]);
    assert!(close > 0.5, "paraphrase similarity {close}");
    assert!(far < 0.2, "unrelated similarity {far}");
    assert!(close > far + 0.3);
}

#[cfg(feature = "local-embeddings")]
#[tokio::test]
async fn a_missing_model_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err =
        lyss_core::embed::LocalEmbedder::load(dir.path(), &dir.path().join("libonnxruntime.so"))
            .err()
            .expect("loading from an empty dir must fail")
            .to_string();
    assert!(err.contains("scripts/fetch-models.sh"), "{err}");
}

#[tokio::test]
async fn openai_compatible_embeddings_are_checked_and_normalized() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "object": "list", "model": "m",
            "data": [
                {"object": "embedding", "index": 1, "embedding": [0.0, 2.0, 0.0]},
                {"object": "embedding", "index": 0, "embedding": [3.0, 0.0, 4.0]}
            ]
        })))
        .mount(&upstream)
        .await;
    let e = OpenAiEmbedder::new(provider(&upstream), "m", 3);
    let v = e
        .embed(&["a".to_string(), "b".to_string()])
        .await
        .expect("embed");
    assert_eq!(v[0], vec![0.6, 0.0, 0.8]);
    assert_eq!(v[1], vec![0.0, 1.0, 0.0]);
    let wrong = OpenAiEmbedder::new(provider(&upstream), "m", 384);
    assert!(
        wrong
            .embed(&["a".to_string(), "b".to_string()])
            .await
            .is_err()
    );
}

fn provider(upstream: &wiremock::MockServer) -> Arc<dyn lyss_core::Provider> {
    Arc::new(
        lyss_core::OpenAiProvider::from_config(&lyss_core::config::ProviderConfig {
            name: "up".into(),
            kind: Default::default(),
            base_url: format!("{}/v1", upstream.uri()),
            api_key_env: None,
            api_key: None,
            connect_timeout_secs: 2,
            timeout_secs: 5,
            discover_models: false,
            api_version: None,
            prompt_cache: None,
            responses_models: None,
        })
        .expect("provider"),
    )
}

#[cfg(feature = "local-embeddings")]
#[tokio::test]
async fn the_configured_embedder_is_opened_or_reported_missing() {
    use lyss_core::config::{Config, EmbedderConfig, EmbedderKind};
    use lyss_core::setup::open_embedder;
    let providers = Default::default();
    let none = Config {
        embedder: EmbedderConfig {
            kind: EmbedderKind::None,
            ..EmbedderConfig::default()
        },
        ..Config::default()
    };
    assert!(
        open_embedder(&none, &providers)
            .await
            .expect("none")
            .is_none()
    );
    // A local model that is not there: no error, no embedder (the server still starts).
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = Config {
        embedder: EmbedderConfig {
            models_dir: Some(dir.path().to_owned()),
            ..EmbedderConfig::default()
        },
        ..Config::default()
    };
    assert!(
        open_embedder(&missing, &providers)
            .await
            .expect("missing")
            .is_none()
    );
    // `openai` without its settings is a configuration error that names the key.
    let incomplete = Config {
        embedder: EmbedderConfig {
            kind: EmbedderKind::Openai,
            ..EmbedderConfig::default()
        },
        ..Config::default()
    };
    let err = open_embedder(&incomplete, &providers)
        .await
        .err()
        .expect("error")
        .to_string();
    assert!(err.contains("embedder"), "{err}");
    if lyss_core::testing::services::local_embedder()
        .await
        .is_some()
    {
        let found = Config::default();
        let e = open_embedder(&found, &providers)
            .await
            .expect("local")
            .expect("loaded");
        assert_eq!(e.dimension(), 384);
    }
}

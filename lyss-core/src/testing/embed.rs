//! The `Embedder` conformance suite.

use std::sync::Arc;

use crate::embed::{Embedder, cosine};

/// Generates one test per case for an embedder, given an `async` block that returns
/// `Some(Arc<dyn Embedder>)`, or `None` to skip.
#[macro_export]
macro_rules! embedder_conformance {
    ($factory:expr) => {
        $crate::embedder_conformance!(@cases $factory;
            one_unit_vector_per_text_in_order,
            the_same_text_gives_the_same_vector,
            an_empty_batch_is_empty,
        );
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some(embedder): Option<::std::sync::Arc<dyn $crate::embed::Embedder>> = $factory.await else {
                    return;
                };
                $crate::testing::embed::$case(embedder).await;
            }
        )+
    };
}

fn texts(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub async fn one_unit_vector_per_text_in_order(embedder: Arc<dyn Embedder>) {
    let input = texts(&["I write Python at work.", "", "Paris is rainy in November."]);
    let out = embedder.embed(&input).await.expect("embed");
    assert_eq!(out.len(), 3);
    for (i, v) in out.iter().enumerate() {
        assert_eq!(v.len(), embedder.dimension(), "vector {i}");
        let norm = cosine(v, v).sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-3 || (i == 1 && norm == 0.0),
            "vector {i} has norm {norm}"
        );
    }
    // Order is kept: each vector is its own text's.
    let alone = embedder.embed(&input[2..]).await.expect("embed one");
    assert!(cosine(&alone[0], &out[2]) > 0.999);
}

pub async fn the_same_text_gives_the_same_vector(embedder: Arc<dyn Embedder>) {
    let a = embedder
        .embed(&texts(&["short answers, please"]))
        .await
        .expect("embed");
    let b = embedder
        .embed(&texts(&["short answers, please"]))
        .await
        .expect("embed");
    assert!(cosine(&a[0], &b[0]) > 0.9999);
}

pub async fn an_empty_batch_is_empty(embedder: Arc<dyn Embedder>) {
    assert!(embedder.embed(&[]).await.expect("embed").is_empty());
}

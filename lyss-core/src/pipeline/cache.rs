//! Stage 4 — the answer cache: the entry a request reads and writes (exact, then by meaning in
//! semantic workspaces), and answering from it.

use std::sync::Arc;
use std::time::Duration;

use super::settle::LedgerDraft;
use super::{
    CACHE_HEADER, CACHE_SIMILARITY_HEADER, CacheControl, Call, ChatBody, ChatReply, Lyss, Prepared,
};
use crate::cache::answer::replay;
use crate::cache::{Cache, CacheStats, exact_key, semantic_partition};
use crate::config::CacheScope;
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::policy::{Principal, Reservation};
use crate::wire::{ChatRequest, ChatResponse};

impl Lyss {
    /// What the answer cache holds (`None` when no workspace caches).
    pub async fn cache_stats(&self) -> Result<Option<CacheStats>> {
        match &self.cache {
            Some(c) => c.stats().await.map(Some),
            None => Ok(None),
        }
    }

    /// Clears the cached answers of one workspace (by id), or all of them; returns how many.
    pub async fn cache_clear(&self, workspace_id: Option<&str>) -> Result<u64> {
        let Some(cache) = &self.cache else {
            return Ok(0);
        };
        cache
            .clear(&workspace_id.map(cache_prefix).unwrap_or_default())
            .await
    }

    /// The semantic cache's embedder, loaded on first use.
    async fn embedder(&self) -> Option<Arc<dyn Embedder>> {
        self.embedder
            .get_or_init(|| async {
                match &self.embedder_loader {
                    Some(load) => load().await,
                    None => None,
                }
            })
            .await
            .clone()
    }

    /// Stage 4: the cache entry this request reads and writes, when its workspace caches and
    /// the caller did not opt out. The key covers the request as it goes upstream.
    pub(super) async fn cache_plan(
        &self,
        who: &Principal,
        call: &Call,
        req: &ChatRequest,
        model: &Model,
    ) -> Option<CachePlan> {
        let cache = self.cache.as_ref()?;
        let policy = self
            .cache_config
            .policy_for(&who.workspace_name, &who.workspace_cache)?;
        // A web search answers from the web as it is now: never from the cache.
        if call.cache == CacheControl::NoCache || req.builtin_tools.is_some() {
            return None;
        }
        // Every scope but the global one starts with its workspace, so that clearing a
        // workspace clears its users' and keys' entries too.
        let ws = cache_prefix(&who.workspace_id);
        let scope = match policy.scope {
            CacheScope::Workspace => ws,
            CacheScope::User => format!("{ws}u:{}:", who.user_id),
            CacheScope::Key => format!("{ws}k:{}:", who.key_id),
            CacheScope::Global => "g:".to_owned(),
        };
        let key = match exact_key(&scope, &model.upstream, req) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "cache key failed; request not cached");
                return None;
            }
        };
        let mut semantic = None;
        if let Some(threshold) = policy.semantic_threshold {
            match self.embedder().await {
                Some(embedder) => {
                    if let Ok(Some((partition, question))) =
                        semantic_partition(&scope, &model.upstream, embedder.name(), req)
                    {
                        semantic = Some(SemanticPlan {
                            partition,
                            question,
                            // A request may ask for a closer match, never a looser one.
                            threshold: call.cache_threshold.map_or(threshold, |t| t.max(threshold)),
                            embedder,
                            vector: None,
                        })
                    }
                }
                None => tracing::debug!("no embedder: semantic cache works as an exact one"),
            }
        }
        Some(CachePlan {
            cache: cache.clone(),
            key,
            ttl: policy.ttl,
            read: call.cache != CacheControl::Refresh,
            store: call.cache != CacheControl::NoStore,
            semantic,
        })
    }

    /// Answers from the cache: nothing is reserved or billed; the ledger row records the hit
    /// with the tokens and cost it saved.
    pub(super) async fn serve_hit(
        &self,
        prepared: Prepared,
        call: &Call,
        req: &ChatRequest,
        hit: Hit,
    ) -> Result<ChatReply> {
        let Prepared {
            principal,
            model,
            started,
            compressed,
            ..
        } = prepared;
        let Hit {
            answer: hit,
            similarity,
        } = hit;
        let saved = hit.usage.clone().unwrap_or_default();
        let mut ledger = LedgerDraft {
            principal,
            request_id: call.request_id.clone(),
            endpoint: "chat",
            model,
            public_model: req.model.clone(),
            stream: req.is_stream(),
            started,
            reservation: Reservation::default(),
            prompt_tokens: 0,
            memory: compressed,
            policy: self.policy.clone(),
            settled: false,
        };
        ledger
            .record_hit(
                &saved,
                if similarity.is_some() {
                    "semantic"
                } else {
                    "hit"
                },
            )
            .await?;
        crate::telemetry::gateway_time(started.elapsed());
        let headers = match similarity {
            Some(sim) => vec![
                (CACHE_HEADER, "semantic-hit".to_owned()),
                (CACHE_SIMILARITY_HEADER, format!("{sim:.4}")),
            ],
            None => vec![(CACHE_HEADER, "hit".to_owned())],
        };
        let body = if req.is_stream() {
            let chunks = replay(&hit, req.wants_stream_usage());
            ChatBody::Stream(Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))))
        } else {
            ChatBody::Complete(hit)
        };
        Ok(ChatReply { body, headers })
    }
}

/// The start of every cache key of a workspace.
fn cache_prefix(workspace_id: &str) -> String {
    format!("w:{workspace_id}:")
}

/// One request's entry in the cache.
pub(super) struct CachePlan {
    cache: Arc<dyn Cache>,
    key: String,
    ttl: Duration,
    read: bool,
    pub(super) store: bool,
    /// Where and how the question is looked up by meaning (semantic mode).
    semantic: Option<SemanticPlan>,
}

struct SemanticPlan {
    partition: String,
    question: String,
    threshold: f32,
    embedder: Arc<dyn Embedder>,
    /// The question's embedding, once computed.
    vector: Option<Vec<f32>>,
}

impl SemanticPlan {
    /// Embeds the question, once.
    async fn embed(&mut self) -> Result<()> {
        if self.vector.is_none() {
            let mut v = self
                .embedder
                .embed(std::slice::from_ref(&self.question))
                .await?;
            self.vector = Some(
                v.pop()
                    .ok_or_else(|| Error::Internal("the embedder returned nothing".into()))?,
            );
        }
        Ok(())
    }

    /// The answer to the most similar question above the threshold, with its similarity.
    async fn lookup(&mut self, cache: &dyn Cache) -> Result<Option<crate::cache::Similar>> {
        self.embed().await?;
        let v = self.vector.as_deref().unwrap_or_default();
        cache.get_similar(&self.partition, v, self.threshold).await
    }

    /// Files the question of the answer cached under `key`.
    async fn file(&mut self, cache: &dyn Cache, key: &str, ttl: Duration) -> Result<()> {
        self.embed().await?;
        let v = self.vector.as_deref().unwrap_or_default();
        cache.put_vector(&self.partition, key, v, ttl).await
    }
}

/// An answer from the cache; `similarity` for a semantic hit.
pub(super) struct Hit {
    answer: ChatResponse,
    similarity: Option<f32>,
}

impl CachePlan {
    /// The cached answer, if any: the same request, else (semantic mode) the same context
    /// with a question close enough. A failing or garbled cache is a miss: the request goes
    /// upstream and the log says why.
    pub(super) async fn lookup(&mut self) -> Option<Hit> {
        if !self.read {
            return None;
        }
        let exact = self.cache.get(&self.key).await;
        if let Some(answer) = self.decode(exact) {
            return Some(Hit {
                answer,
                similarity: None,
            });
        }
        let found = self.semantic.as_mut()?.lookup(self.cache.as_ref()).await;
        let similarity = found
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .map(|s| s.similarity);
        Some(Hit {
            answer: self.decode(found.map(|s| s.map(|s| s.value)))?,
            similarity,
        })
    }

    fn decode(&self, found: Result<Option<Vec<u8>>>) -> Option<ChatResponse> {
        match found {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(resp) => Some(resp),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable cache entry; asking upstream");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cache unavailable; asking upstream");
                None
            }
        }
    }

    /// Stores an answer (and files its question by meaning); a failure is logged, never the
    /// request's problem.
    pub(super) async fn store(&mut self, answer: &ChatResponse) {
        let stored = match serde_json::to_vec(answer) {
            Ok(bytes) => self.cache.put(&self.key, bytes, self.ttl).await,
            Err(e) => Err(Error::Internal(e.to_string())),
        };
        let filed = match (&stored, self.semantic.as_mut()) {
            (Ok(()), Some(sem)) => sem.file(self.cache.as_ref(), &self.key, self.ttl).await,
            _ => Ok(()),
        };
        if let Err(e) = stored.and(filed) {
            tracing::warn!(error = %e, "could not cache an answer");
        }
    }
}

//! The stream relay: chunks for the client, settlement when the upstream stream ends (or on
//! drop, when the client goes away first), the complete answer for the cache.

use futures::StreamExt as _;

use super::cache::CachePlan;
use super::settle::LedgerDraft;
use super::{ChatStream, outlived};
use crate::cache::answer::Collector;
use crate::error::{Error, Result};
use crate::openai::Usage;
use crate::provider::ChunkStream;
use crate::tokens;

/// Relays an upstream stream to the client and settles the ledger at its end — or, if the
/// client goes away first, on drop.
pub(super) struct StreamRelay {
    pub(super) upstream: ChunkStream,
    /// `None` once settled.
    pub(super) ledger: Option<LedgerDraft>,
    pub(super) usage: Option<Usage>,
    pub(super) prompt_estimate: u64,
    pub(super) completion_text: String,
    /// Whether a choice reported its `finish_reason`: a stream that ends without one was cut.
    pub(super) finished: bool,
    pub(super) client_wants_usage: bool,
    /// The stream is cut here, before its reservation could be reaped.
    pub(super) deadline: tokio::time::Instant,
    /// Where the complete answer is cached, and the answer so far.
    pub(super) cache: Option<(CachePlan, Collector)>,
}

impl StreamRelay {
    fn provider_name(&self) -> String {
        self.ledger
            .as_ref()
            .map(|l| l.model.provider.name().to_owned())
            .unwrap_or_default()
    }

    pub(super) fn into_stream(self) -> ChatStream {
        Box::pin(futures::stream::unfold(self, |mut relay| async move {
            loop {
                let model = relay.ledger.as_ref()?.model.clone();
                let next = tokio::time::timeout_at(relay.deadline, relay.upstream.next())
                    .await
                    .unwrap_or_else(|_| Some(Err(outlived(&model))));
                match next {
                    Some(Ok(mut chunk)) => {
                        if let Some((_, collected)) = &mut relay.cache {
                            collected.push(&chunk);
                        }
                        for c in &chunk.choices {
                            if let Some(t) = &c.delta.content {
                                relay.completion_text.push_str(t);
                            }
                            relay.finished |= c.finish_reason.is_some();
                        }
                        if let Some(u) = &chunk.usage {
                            relay.usage = Some(u.clone());
                            if !relay.client_wants_usage {
                                if chunk.choices.is_empty() {
                                    continue;
                                }
                                chunk.usage = None;
                            }
                        }
                        return Some((Ok(chunk), relay));
                    }
                    Some(Err(e)) => {
                        let status = if matches!(e, Error::UpstreamTimeout { .. }) {
                            504
                        } else {
                            502
                        };
                        relay.settle(status, Some(e.to_string())).await.ok();
                        return Some((Err(e), relay));
                    }
                    None if !relay.finished => {
                        let e = Error::UpstreamUnavailable {
                            provider: relay.provider_name(),
                            message: "stream ended before the answer finished".into(),
                        };
                        relay.settle(502, Some(e.to_string())).await.ok();
                        return Some((Err(e), relay));
                    }
                    None => {
                        if let Err(e) = relay.settle(200, None).await {
                            return Some((Err(e), relay));
                        }
                        if let Some((mut plan, collected)) = relay.cache.take()
                            && let Some(answer) = collected.finish()
                        {
                            plan.store(&answer).await;
                        }
                        return None;
                    }
                }
            }
        }))
    }

    /// The usage to bill: upstream's if it reported one, else counted with the tokenizer.
    fn usage(&self) -> Usage {
        self.usage.clone().unwrap_or_else(|| {
            let model = self
                .ledger
                .as_ref()
                .map(|l| l.model.upstream.as_str())
                .unwrap_or_default();
            Usage {
                prompt_tokens: self.prompt_estimate,
                completion_tokens: tokens::count_text(model, &self.completion_text),
                ..Usage::default()
            }
        })
    }

    async fn settle(&mut self, status: u16, error: Option<String>) -> Result<()> {
        let usage = self.usage();
        let Some(mut ledger) = self.ledger.take() else {
            return Ok(());
        };
        ledger.settle(&usage, status, error).await.map(|_| ())
    }
}

impl Drop for StreamRelay {
    fn drop(&mut self) {
        // The client went away mid-stream: bill what flowed (499, nginx's "client closed").
        let usage = self.usage();
        if let Some(mut ledger) = self.ledger.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let settled = ledger
                    .settle(&usage, 499, Some("client disconnected".into()))
                    .await;
                if let Err(e) = settled {
                    tracing::error!(error = %e, "could not record a cancelled stream");
                }
            });
        }
    }
}

//! The stream relay: chunks for the client, settlement when the upstream stream ends (or on
//! drop, when the client goes away first), the complete answer for the cache — and, for an
//! answer whose reservation grows with it, top-ups before the answer outgrows what is held.

use std::collections::BTreeSet;

use futures::StreamExt as _;

use super::cache::CachePlan;
use super::settle::LedgerDraft;
use super::{ChatStream, outlived};
use crate::cache::answer::Collector;
use crate::error::{Error, Result};
use crate::policy::{BudgetLeft, Reservation};
use crate::provider::ChunkStream;
use crate::tokens;
use crate::wire::{ChatChunk, ChunkChoice, Delta, Usage};

/// What the ledger says of an answer cut because no budget could hold more of it.
const CUT_AT_LIMIT: &str = "cut at the budget's limit";

/// An answer whose reservation grows with it: what is held, what has flowed, and the choices
/// still open (each gets `finish_reason: "length"` if the answer is cut).
pub(super) struct Growth {
    reserved: u64,
    ceiling: u64,
    /// Output counted so far, in quarter tokens: a tokenizer that only approximates the
    /// model's (anything but OpenAI's families) is counted with a 25% margin.
    quarters: u64,
    per_token: u64,
    open: BTreeSet<u32>,
}

impl Growth {
    /// Follows `reservation` if it grows.
    pub(super) fn of(reservation: &Reservation, upstream: &str) -> Option<Self> {
        reservation.grows().then(|| Growth {
            reserved: u64::from(reservation.output),
            ceiling: u64::from(reservation.ceiling),
            quarters: 0,
            per_token: if tokens::is_exact(upstream) { 4 } else { 5 },
            open: BTreeSet::new(),
        })
    }

    /// Tokens counted so far, rounded up.
    fn counted(&self) -> u64 {
        self.quarters.div_ceil(4)
    }

    /// A chunk's answer on every open choice, cut: `finish_reason: "length"`, no text.
    fn cut(&self, like: &ChatChunk) -> ChatChunk {
        let choices = if self.open.is_empty() {
            BTreeSet::from([0])
        } else {
            self.open.clone()
        };
        ChatChunk {
            choices: choices
                .into_iter()
                .map(|index| ChunkChoice {
                    index,
                    delta: Delta::default(),
                    finish_reason: Some("length".into()),
                    extra: Default::default(),
                })
                .collect(),
            usage: None,
            ..like.clone()
        }
    }
}

/// The text of a chunk that the upstream bills as output: content, tool-call arguments, and
/// reasoning some servers stream beside the content.
fn output_text(chunk: &ChatChunk) -> impl Iterator<Item = &str> {
    chunk.choices.iter().flat_map(|c| {
        let d = &c.delta;
        d.content
            .as_deref()
            .into_iter()
            .chain(
                d.tool_calls
                    .iter()
                    .flatten()
                    .filter_map(|t| t.function.as_ref().and_then(|f| f.arguments.as_deref())),
            )
            .chain(
                ["reasoning_content", "reasoning"]
                    .into_iter()
                    .filter_map(|k| d.extra.get(k).and_then(|v| v.as_str())),
            )
    })
}

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
    /// The reservation follows the answer (`None`: it was reserved whole up front).
    pub(super) growth: Option<Growth>,
    /// Learns what the budgets have left once the answer has settled.
    pub(super) settled: Option<tokio::sync::oneshot::Sender<BudgetLeft>>,
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
                        match relay.hold(&chunk).await {
                            Ok(true) => {}
                            Ok(false) => return Some((Ok(relay.cut(&chunk).await), relay)),
                            Err(e) => {
                                relay.settle(503, Some(e.to_string())).await.ok();
                                return Some((Err(e), relay));
                            }
                        }
                        if let Some((_, collected)) = &mut relay.cache {
                            collected.push(&chunk);
                        }
                        for text in output_text(&chunk) {
                            relay.completion_text.push_str(text);
                        }
                        for c in &chunk.choices {
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

    /// Makes sure the reservation holds `chunk` too, topping it up if the answer outgrew it:
    /// `false` when no budget can take more (the answer must be cut before this chunk). A
    /// top-up asks for as much again as is held (at least what the chunk needs), so a long
    /// answer takes few of them.
    async fn hold(&mut self, chunk: &ChatChunk) -> Result<bool> {
        let Some(g) = &mut self.growth else {
            return Ok(true);
        };
        let upstream = self
            .ledger
            .as_ref()
            .map(|l| l.model.upstream.as_str())
            .unwrap_or_default();
        let quarters: u64 = output_text(chunk)
            .map(|t| tokens::count_text(upstream, t) * g.per_token)
            .sum();
        for c in &chunk.choices {
            if c.finish_reason.is_some() {
                g.open.remove(&c.index);
            } else {
                g.open.insert(c.index);
            }
        }
        let need = (g.quarters + quarters).div_ceil(4);
        if need > g.reserved && g.reserved < g.ceiling {
            let want = (need - g.reserved)
                .max(g.reserved)
                .min(g.ceiling - g.reserved);
            let Some(ledger) = &self.ledger else {
                return Ok(true);
            };
            let granted = ledger
                .policy
                .top_up(
                    &ledger.reservation,
                    ledger.model.price,
                    u32::try_from(want).unwrap_or(u32::MAX),
                )
                .await?;
            g.reserved += u64::from(granted);
        }
        // Past the ceiling too: the upstream was sent it as `max_tokens` and should have
        // stopped there.
        if need > g.reserved {
            return Ok(false);
        }
        g.quarters += quarters;
        Ok(true)
    }

    /// Ends the answer before `chunk`, which no budget could hold: every open choice finishes
    /// with `"length"` (as if `max_tokens` had been reached), and what flowed is settled. Not
    /// cached: it is not the answer to the request as sent.
    async fn cut(&mut self, chunk: &ChatChunk) -> ChatChunk {
        let Some(g) = &self.growth else {
            return chunk.clone();
        };
        let mut last = g.cut(chunk);
        let counted = g.counted();
        self.cache = None;
        self.usage = None;
        let mut usage = self.usage();
        usage.completion_tokens = usage.completion_tokens.min(counted);
        if self.client_wants_usage {
            last.usage = Some(usage.clone());
        }
        if let Err(e) = self
            .settle_with(usage, 200, Some(CUT_AT_LIMIT.into()))
            .await
        {
            tracing::error!(error = %e, "could not settle an answer cut at its budget");
        }
        last
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
        self.settle_with(self.usage(), status, error).await
    }

    async fn settle_with(
        &mut self,
        usage: Usage,
        status: u16,
        error: Option<String>,
    ) -> Result<()> {
        let Some(mut ledger) = self.ledger.take() else {
            return Ok(());
        };
        let left = ledger.settle(&usage, status, error).await?;
        if let Some(tell) = self.settled.take() {
            tell.send(left).ok();
        }
        Ok(())
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

//! `POST /v1/embeddings`: the chat path's stages that apply to embeddings — authenticate,
//! authorize, rate limits, a reservation, the call, settlement.

use std::time::Instant;

use super::settle::LedgerDraft;
use super::{Call, Endpoint, Lyss};
use crate::error::Result;
use crate::tokens;
use crate::wire::{EmbeddingsRequest, EmbeddingsResponse, EncodingFormat, Usage};

impl Lyss {
    /// `POST /v1/embeddings`; a request refused before its reservation is recorded as chat's
    /// are ([`Lyss::record_refusal`]).
    pub async fn embeddings(
        &self,
        call: &Call,
        req: EmbeddingsRequest,
    ) -> Result<EmbeddingsResponse> {
        let started = Instant::now();
        let model = req.model.clone();
        let mut ledgered = false;
        let out = self.embeddings_inner(call, req, &mut ledgered).await;
        if let Err(e) = &out
            && !ledgered
        {
            let call = Call {
                endpoint: Endpoint::Embeddings,
                ..call.clone()
            };
            self.record_refusal(&call, &model, e, started).await;
        }
        out
    }

    async fn embeddings_inner(
        &self,
        call: &Call,
        mut req: EmbeddingsRequest,
        ledgered: &mut bool,
    ) -> Result<EmbeddingsResponse> {
        let started = Instant::now();
        let principal = self.authenticate(&call.api_key).await?;
        let model = self.authorize(&principal, &req.model)?;
        let now = self.clock.now();
        let prompt_tokens = tokens::count_embedding_input(&model.upstream, &req.input);
        self.rate_limit(&principal, prompt_tokens, now).await?;
        let reservation = self
            .reserve(&principal, &model, prompt_tokens, Some(0), false, now)
            .await?;
        *ledgered = true;
        let public_model = std::mem::replace(&mut req.model, model.upstream.clone());
        let want_base64 = req.encoding_format == Some(EncodingFormat::Base64);
        let mut ledger = LedgerDraft {
            principal,
            request_id: call.request_id.clone(),
            endpoint: Endpoint::Embeddings.as_str(),
            model: model.clone(),
            public_model,
            stream: false,
            started,
            reservation,
            prompt_tokens,
            memory: None,
            policy: self.policy.clone(),
            settled: false,
        };
        let mut resp = match model.provider.embeddings(&req).await {
            Ok(r) => r,
            Err(e) => return Err(ledger.failed(e).await),
        };
        let usage = resp.usage.clone().unwrap_or_else(|| Usage {
            prompt_tokens,
            ..Usage::default()
        });
        ledger.settle(&usage, 200, None).await?;
        if want_base64 {
            for e in &mut resp.data {
                e.embedding = std::mem::replace(
                    &mut e.embedding,
                    crate::wire::EmbeddingVector::Float(Vec::new()),
                )
                .into_base64();
            }
        }
        Ok(resp)
    }
}

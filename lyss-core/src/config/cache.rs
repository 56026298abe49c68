//! `[cache]`: exact and semantic answer caching, per workspace.

use serde::{Deserialize, Serialize};

/// Response caching: an identical (or, in `semantic` mode, equivalent) request is answered
/// from the cache instead of upstream. A workspace's settings stored with `lyss workspace
/// update` override these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// For every workspace not listed in `workspaces`. Default `off`: a chat client's
    /// "regenerate" button resends the identical request and expects a new answer.
    pub mode: CacheMode,
    /// How long an answer stays cached, in seconds. Default 3,600.
    pub ttl_secs: u64,
    /// Who shares cached answers. Default `workspace`.
    pub scope: CacheScope,
    /// In `semantic` mode, how similar (cosine, 0–1] a question must be to a cached one to be
    /// answered with its answer. Default 0.95; a request may raise it, never lower it.
    pub semantic_threshold: f32,
    /// Where answers live: `memory` (this process) or `redis` (`redis_url`, shared by
    /// replicas). Default `memory`.
    pub backend: CacheBackend,
    /// Bytes the in-process cache holds at most. Default 256 MiB.
    pub max_bytes: u64,
    /// Where in Redis this deployment's answers live (every key starts with it). Default
    /// `lyss:cache:`; deployments sharing one Redis each need their own.
    pub redis_prefix: String,
    /// Per-workspace overrides by workspace name.
    pub workspaces: std::collections::HashMap<String, WorkspaceCache>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            mode: CacheMode::Off,
            ttl_secs: 3_600,
            scope: CacheScope::Workspace,
            semantic_threshold: 0.95,
            backend: CacheBackend::Memory,
            max_bytes: 256 * 1024 * 1024,
            redis_prefix: "lyss:cache:".into(),
            workspaces: Default::default(),
        }
    }
}

/// Whether answers are cached, and how they are found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    #[default]
    Off,
    /// The same request, byte for byte after memory assembly.
    Exact,
    /// The same request, or the same context with a question of the same meaning (by the
    /// embedding of the last user message).
    Semantic,
}

/// Who shares a cached answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    Key,
    User,
    #[default]
    Workspace,
    /// Every workspace: only for deployments whose tenants trust each other.
    Global,
}

/// Where cached answers live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackend {
    #[default]
    Memory,
    Redis,
}

/// A workspace's overrides of the global cache settings (in config, or stored with
/// `lyss workspace update`); an absent field inherits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceCache {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<CacheMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<CacheScope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_threshold: Option<f32>,
}

impl WorkspaceCache {
    /// These overrides, with `over`'s fields replacing those it sets.
    pub fn merged(self, over: &WorkspaceCache) -> WorkspaceCache {
        WorkspaceCache {
            mode: over.mode.or(self.mode),
            ttl_secs: over.ttl_secs.or(self.ttl_secs),
            scope: over.scope.or(self.scope),
            semantic_threshold: over.semantic_threshold.or(self.semantic_threshold),
        }
    }

    /// Refuses a time to live of 0 and a threshold outside (0, 1].
    pub fn validate(&self) -> crate::Result<()> {
        if self.ttl_secs == Some(0) {
            return Err(crate::Error::invalid_param(
                "cache ttl must be at least one second",
                "ttl_secs",
            ));
        }
        if let Some(t) = self.semantic_threshold
            && !(t > 0.0 && t <= 1.0)
        {
            return Err(crate::Error::invalid_param(
                format!("semantic threshold must be in (0, 1], not {t}"),
                "semantic_threshold",
            ));
        }
        Ok(())
    }
}

/// The cache settings in force for one workspace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CachePolicy {
    pub ttl: std::time::Duration,
    pub scope: CacheScope,
    /// The similarity a semantic hit needs, or `None` in exact mode.
    pub semantic_threshold: Option<f32>,
}

impl CacheConfig {
    /// The cache settings of a workspace — this config, its entry in `workspaces`, then
    /// `stored` (the settings kept in the database) — or `None` when its cache is off.
    pub fn policy_for(&self, workspace: &str, stored: &WorkspaceCache) -> Option<CachePolicy> {
        let w = self
            .workspaces
            .get(workspace)
            .copied()
            .unwrap_or_default()
            .merged(stored);
        let mode = w.mode.unwrap_or(self.mode);
        (mode != CacheMode::Off).then(|| CachePolicy {
            ttl: std::time::Duration::from_secs(w.ttl_secs.unwrap_or(self.ttl_secs).max(1)),
            scope: w.scope.unwrap_or(self.scope),
            semantic_threshold: (mode == CacheMode::Semantic)
                .then(|| w.semantic_threshold.unwrap_or(self.semantic_threshold)),
        })
    }

    /// Whether the config turns semantic caching on for any workspace.
    pub fn any_semantic(&self) -> bool {
        self.mode == CacheMode::Semantic
            || self
                .workspaces
                .values()
                .any(|w| w.mode == Some(CacheMode::Semantic))
    }
}

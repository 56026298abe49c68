//! `[memory]`: when memory compresses and recalls, with what budgets, per workspace.

use serde::{Deserialize, Serialize};

/// Long-term memory: recall into the prompt, compress old history, remember every turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// For every workspace not listed otherwise in `workspaces`: `"auto"` (default), `true`
    /// or `false` — see [`MemoryMode`].
    pub enabled: MemoryMode,
    /// Per-workspace settings by workspace name: `name = true|false|"auto"`, or a table with
    /// any of `enabled`, `history_tokens`, `memory_tokens`, overriding the global ones.
    pub workspaces: std::collections::HashMap<String, WorkspaceMemory>,
    /// Recent conversation kept verbatim, in tokens (the system prompt and the newest
    /// exchange always stay). Default 256.
    pub history_tokens: u64,
    /// Largest block of recalled memories injected, in tokens. Default 1,400.
    pub memory_tokens: u64,
    /// Memories recalled at most (the block is filled by tokens first). Default 64.
    pub top_k: usize,
    /// Vector matches below this cosine similarity are not recalled. Default 0.2.
    pub min_similarity: f32,
    /// An extracted fact this similar to an existing memory is not stored again.
    /// Default 0.92.
    pub dedupe_similarity: f32,
    /// A configured model (name or alias) that extracts facts from each new turn and decides
    /// ADD/UPDATE/DELETE against the existing memories. Unset: turns are stored raw.
    pub extraction_model: Option<String>,
}

/// When memory works on a workspace's chat requests.
///
/// `Auto` is the default because it remembers the person in every chat and never makes a
/// prompt pay for nothing: it compresses only what costs more than memory's whole budget, adds
/// to a short prompt only what recall finds relevant (and the person's profile), and leaves
/// alone what is not conversation — a client's housekeeping (titles, summaries, translations)
/// and agents (tools, tool calls, trailing instructions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemoryMode {
    /// Never: requests go upstream as sent and nothing is remembered.
    Off,
    /// Every conversation is remembered (its turns queued, its profile statements kept).
    /// A prompt longer than `history_tokens + memory_tokens` is compressed when that saves
    /// materially and costs less than sending it whole (sent whole, a conversation lyss sent
    /// lately to a provider that caches prompts is read from that cache at a fraction of the
    /// input price, Anthropic a tenth). A shorter one gets the memories recall finds relevant
    /// to its newest message (a question up to 400 tokens, an ordinary turn up to 100) and
    /// the person's profile — or goes exactly as sent when there are none. Housekeeping and
    /// agent traffic go as sent, and nothing of them is remembered.
    #[default]
    Auto,
    /// Every chat request: its turns are remembered and the user's memories recalled into
    /// it, even a short one (a new conversation starts with what lyss knows of the user).
    On,
}

impl Serialize for MemoryMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Off => s.serialize_bool(false),
            Self::On => s.serialize_bool(true),
            Self::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for MemoryMode {
    /// `true`/`false`, or one of the strings `auto`, `on`, `off`, `true`, `false` (as an
    /// environment variable sets it).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Self::On),
            Raw::Bool(false) => Ok(Self::Off),
            Raw::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
                "auto" => Ok(Self::Auto),
                "on" | "true" => Ok(Self::On),
                "off" | "false" => Ok(Self::Off),
                other => Err(serde::de::Error::custom(format!(
                    "memory mode `{other}`: expected true, false or \"auto\""
                ))),
            },
        }
    }
}

/// One workspace's memory settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WorkspaceMemory {
    Switch(MemoryMode),
    Settings(WorkspaceMemorySettings),
}

/// A workspace's overrides of the global memory settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceMemorySettings {
    /// Default: on (a workspace listed with budgets wants memory).
    pub enabled: Option<MemoryMode>,
    pub history_tokens: Option<u64>,
    pub memory_tokens: Option<u64>,
}

/// How memory works for one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudgets {
    /// `Auto` or `On` (a workspace with memory off has no budgets).
    pub mode: MemoryMode,
    pub history_tokens: u64,
    pub memory_tokens: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            enabled: MemoryMode::Auto,
            workspaces: Default::default(),
            history_tokens: 256,
            memory_tokens: 1_400,
            top_k: 64,
            min_similarity: 0.2,
            dedupe_similarity: 0.92,
            extraction_model: None,
        }
    }
}

impl MemoryConfig {
    /// Whether memory may work on some requests of a workspace.
    pub fn enabled_for(&self, workspace: &str) -> bool {
        self.budgets_for(workspace).is_some()
    }

    /// Whether any workspace may use memory (the store is needed).
    pub fn any_enabled(&self) -> bool {
        self.enabled != MemoryMode::Off || self.workspaces.keys().any(|w| self.enabled_for(w))
    }

    /// Whether some workspace has memory on for every request (not just `auto`).
    pub fn any_on(&self) -> bool {
        let on = |w: &str| {
            self.budgets_for(w)
                .is_some_and(|b| b.mode == MemoryMode::On)
        };
        self.enabled == MemoryMode::On || self.workspaces.keys().any(|w| on(w))
    }

    /// A workspace's memory mode and budgets, or `None` when memory is off for it.
    pub fn budgets_for(&self, workspace: &str) -> Option<MemoryBudgets> {
        let with = |mode: MemoryMode, history_tokens, memory_tokens| {
            (mode != MemoryMode::Off).then_some(MemoryBudgets {
                mode,
                history_tokens,
                memory_tokens,
            })
        };
        let (history, memory) = (self.history_tokens, self.memory_tokens);
        match self.workspaces.get(workspace) {
            None => with(self.enabled, history, memory),
            Some(WorkspaceMemory::Switch(mode)) => with(*mode, history, memory),
            Some(WorkspaceMemory::Settings(s)) => with(
                s.enabled.unwrap_or(MemoryMode::On),
                s.history_tokens.unwrap_or(history),
                s.memory_tokens.unwrap_or(memory),
            ),
        }
    }
}

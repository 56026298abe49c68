//! A scope as a process holds it: its in-process index, the memory of each row, and the turns
//! it remembers, kept in step with the database's version of the scope.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::Memory;
use super::index::{IndexRow, ScopeIndex};

/// A scope's place in a store's map of scopes: locked while the scope is looked up or (re)built,
/// empty until its first build.
pub(crate) type Slot =
    std::sync::Arc<tokio::sync::Mutex<Option<std::sync::Arc<std::sync::Mutex<Loaded>>>>>;

/// A scope's index, the memory of each of its rows, and the turns it remembers. Holding the
/// memories themselves lets a search answer without reading them back from the database.
#[derive(Default)]
pub(crate) struct Loaded {
    /// The scope version the index reflects.
    pub(crate) version: i64,
    pub(crate) index: ScopeIndex,
    /// Row number → memory (rows of deleted memories stay, dead in the index).
    pub(crate) memories: Vec<Memory>,
    /// Memory id → row number, for live rows.
    pub(crate) rows: HashMap<String, usize>,
    /// Turn hashes known to be remembered (the database may know more: another process
    /// completed a turn without changing a memory).
    pub(crate) turns: HashSet<u128>,
    /// Versions this process committed and is applying: a reader that finds the database at
    /// one of them is behind nothing it needs to rebuild for.
    pub(crate) in_flight: BTreeSet<i64>,
    /// Versions applied while an earlier one was still in flight.
    pub(crate) ahead: BTreeSet<i64>,
}

impl Loaded {
    pub(crate) fn add(&mut self, memory: Memory, vector: Option<Vec<f32>>) {
        let context = context_of(self.memories.last(), &memory).map(str::to_owned);
        let row = self
            .index
            .add_turn(&memory.text, context.as_deref(), memory.role, vector);
        self.rows.insert(memory.id.clone(), row);
        self.memories.push(memory);
    }

    /// Adds many rows at once (see [`ScopeIndex::extend`]).
    pub(crate) fn extend(&mut self, entries: Vec<(Memory, Option<Vec<f32>>)>) {
        let first = self.memories.len();
        let mut rows = Vec::with_capacity(entries.len());
        for (i, (memory, vector)) in entries.into_iter().enumerate() {
            self.rows.insert(memory.id.clone(), first + i);
            let context = context_of(self.memories.last(), &memory).map(str::to_owned);
            rows.push(IndexRow {
                text: memory.text.clone(),
                context,
                speaker: memory.role,
                vector,
            });
            self.memories.push(memory);
        }
        self.index.extend(rows);
    }

    /// Notes that this process committed `version` and is about to apply it.
    pub(crate) fn expect(&mut self, version: i64) {
        if version > self.version {
            self.in_flight.insert(version);
        }
    }

    /// Records that the index now reflects this process's change `version`. The index's own
    /// version moves only over an unbroken run of applied versions: one written by another
    /// process in between leaves it behind (rebuilt on next use).
    pub(crate) fn advance(&mut self, version: i64) {
        self.in_flight.remove(&version);
        if version > self.version {
            self.ahead.insert(version);
        }
        while self.ahead.remove(&(self.version + 1)) {
            self.version += 1;
        }
    }

    /// Whether the index holds every change up to the database's `version` that is not this
    /// process's own, in flight.
    pub(crate) fn current(&self, version: i64) -> bool {
        (self.version + 1..=version).all(|v| self.in_flight.contains(&v) || self.ahead.contains(&v))
    }

    pub(crate) fn remove(&mut self, id: &str) {
        if let Some(row) = self.rows.remove(id) {
            self.index.remove(row);
        }
    }
}

/// The turn a memory answers: the memory stored just before it, when both are turns of one
/// conversation, one after the other.
fn context_of<'a>(previous: Option<&'a Memory>, memory: &Memory) -> Option<&'a str> {
    let previous = previous?;
    let follows = previous.role.is_some()
        && memory.role.is_some()
        && previous.role != memory.role
        && matches!((previous.position, memory.position), (Some(a), Some(b)) if a + 1 == b);
    follows.then_some(previous.text.as_str())
}

//! Which new turns a request hands to memory, and how: stored now, queued, or left in the
//! prompt — bounded whatever the request sends.

use time::OffsetDateTime;

use super::{STORED_NOW_BYTES, TAKEN_BYTES, text_of};
use crate::memory::{NewMemory, TurnRole};
use crate::pipeline::Call;
use crate::wire::{Message, Role};

/// Which new turns a request hands to memory, by index into its new turns (in conversation
/// order).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Intake {
    /// Stored on the request path: the newest dropped turns within [`STORED_NOW_BYTES`].
    pub(super) now: Vec<usize>,
    /// Queued: the other taken turns.
    pub(super) queued: Vec<usize>,
    /// New turns not taken (over [`TAKEN_BYTES`] or the user's queue room).
    pub(super) left_out: usize,
    /// Whether every dropped turn is taken.
    pub(super) complete: bool,
    /// Whether a dropped turn is among the queued ones.
    pub(super) drops_queued: bool,
}

impl Intake {
    /// Takes new turns newest first while they fit in [`TAKEN_BYTES`] and `room` queue
    /// places; of the dropped ones (`drops`), the newest within [`STORED_NOW_BYTES`] are stored
    /// now. If a dropped turn is left out nothing is stored now (the prompt goes whole, so
    /// nothing needs to be searchable now): the taken turns are queued.
    pub(super) fn plan(
        new: &[(usize, NewMemory)],
        room: u64,
        drops: impl Fn(usize) -> bool,
    ) -> Self {
        let mut plan = Self::default();
        let (mut taken, mut places, mut now_bytes) = (0usize, 0u64, 0usize);
        let mut dropped_left_out = false;
        for (i, (p, t)) in new.iter().enumerate().rev() {
            let size = t.text.len();
            let stored_now = drops(*p) && now_bytes + size <= STORED_NOW_BYTES;
            if taken + size > TAKEN_BYTES || (!stored_now && places >= room) {
                plan.left_out += 1;
                dropped_left_out |= drops(*p);
                continue;
            }
            taken += size;
            if stored_now {
                now_bytes += size;
                plan.now.push(i);
            } else {
                places += 1;
                plan.queued.push(i);
            }
        }
        if dropped_left_out {
            plan.queued.append(&mut plan.now);
        }
        plan.now.sort_unstable();
        plan.queued.sort_unstable();
        plan.complete = !dropped_left_out;
        plan.drops_queued = plan.queued.iter().any(|&i| drops(new[i].0));
        plan
    }
}

/// A message as a conversation turn to remember; `None` for instructions and for messages
/// without text (an image alone is not remembered).
pub(super) fn as_turn(
    m: &Message,
    position: usize,
    call: &Call,
    occurred_at: Option<OffsetDateTime>,
) -> Option<NewMemory> {
    let role = match m.role {
        Role::User => TurnRole::User,
        Role::Assistant => TurnRole::Assistant,
        Role::Tool | Role::Function => TurnRole::Tool,
        Role::System | Role::Developer => return None,
    };
    let mut text = text_of(m);
    if role == TurnRole::Tool {
        let name = m
            .name
            .as_deref()
            .or(m.tool_call_id.as_deref())
            .unwrap_or("tool");
        text = format!("Result of {name}: {text}");
    }
    // An assistant's tool calls, summarised as text.
    for c in m.tool_calls.iter().flatten() {
        if let Some(f) = &c.function {
            let sep = if text.is_empty() { "" } else { "\n" };
            let args = f.arguments.as_deref().unwrap_or("");
            text = format!(
                "{text}{sep}Called {}({args})",
                f.name.as_deref().unwrap_or("a tool")
            );
        }
    }
    if text.trim().is_empty() {
        return None;
    }
    Some(NewMemory {
        text,
        source: Some(call.request_id.clone()),
        occurred_at,
        role: Some(role),
        position: u32::try_from(position).ok(),
        profile: false,
    })
}

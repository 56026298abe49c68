//! What a chat request is, as far as memory is concerned — told by its shape, not by one
//! client's exact strings.
//!
//! Memory remembers and recalls only **conversation**: a person talking with a model. Two other
//! kinds of traffic reach a gateway and go upstream exactly as sent, with nothing remembered
//! and nothing recalled into them:
//! - **housekeeping** a client does with the conversation: a title, a summary, a translation.
//!   It quotes the conversation (a transcript as one message: `user: …\nassistant: …`, or
//!   `<chat_history>…`), or it is a one-shot task its instructions describe. Remembering it
//!   would store every turn again; recalling into it would distort the title or the summary.
//! - **agent** traffic: tools declared, tool calls and results, or instructions after the
//!   newest user message (a coding agent's reminder of its edit format). Agents manage their
//!   own context; rewriting it breaks them and saves little. lyss's own memory tools
//!   ([`MEMORY_TOOLS`]) are the exception: a chat that offers only them (LobeChat with lyss's
//!   memory installed as a plugin sends them with every message) is still a person talking,
//!   and calling them acts on lyss, not on a machine.

use crate::wire::{ChatRequest, Message, Role};

/// The kind of a chat request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// A person talking with a model: remembered, and recalled into.
    Conversation,
    /// A client's own task on the conversation (title, summary, translation).
    Housekeeping,
    /// A tool-using agent, or a prompt ending in instructions rather than a turn.
    Agent,
}

/// Words by which a one-shot task's instructions say what it does with the text it is given.
const TASKS: &[&str] = &[
    "title",
    "summar",
    "translat",
    "key takeaways",
    "rephrase",
    "rewrite the",
    "extract the",
    "classify",
    "tags for",
];

/// What a request is.
pub fn classify(req: &ChatRequest) -> Traffic {
    if is_agent(req) {
        Traffic::Agent
    } else if is_housekeeping(req) {
        Traffic::Housekeeping
    } else {
        Traffic::Conversation
    }
}

/// The tools of lyss's MCP memory server (`/mcp`), by name.
pub const MEMORY_TOOLS: &[&str] = &[
    "search_memories",
    "remember",
    "get_profile",
    "correct_memory",
    "forget_memory",
];

/// Whether a tool name, as an MCP client prefixes it with the server's name, is one of lyss's
/// memory tools: `remember`, `mcp__lyss__remember` (Claude Code), `lyss-memory____remember____mcp`
/// (LobeChat), `lyss_remember` (opencode).
pub fn is_memory_tool(name: &str) -> bool {
    MEMORY_TOOLS.iter().any(|tool| {
        name == *tool
            || name
                .strip_suffix(tool)
                .is_some_and(|server| server.ends_with('_'))
            || name.split("__").any(|part| part.trim_matches('_') == *tool)
    })
}

fn is_agent(req: &ChatRequest) -> bool {
    // Calls of lyss's memory tools, by id: their results are part of the conversation.
    let memory_calls: std::collections::HashSet<&str> = req
        .messages
        .iter()
        .flat_map(|m| m.tool_calls.iter().flatten())
        .filter(|c| {
            c.function
                .as_ref()
                .and_then(|f| f.name.as_deref())
                .is_some_and(is_memory_tool)
        })
        .filter_map(|c| c.id.as_deref())
        .collect();
    let tools = req
        .tools
        .iter()
        .flatten()
        .any(|t| !t.function.as_ref().is_some_and(|f| is_memory_tool(&f.name)))
        || req.extra.contains_key("functions")
        || req.messages.iter().any(|m| {
            let foreign_calls = m
                .tool_calls
                .iter()
                .flatten()
                .any(|c| !c.id.as_deref().is_some_and(|id| memory_calls.contains(id)));
            let foreign_result = matches!(m.role, Role::Tool | Role::Function)
                && !m
                    .tool_call_id
                    .as_deref()
                    .is_some_and(|id| memory_calls.contains(id));
            foreign_calls || foreign_result || m.extra.contains_key("function_call")
        });
    // Instructions after the newest user message: the prompt ends in a reminder, not a turn
    // (aider's edit-format reminder) — the client composes its prompt itself.
    let trailing = req
        .messages
        .iter()
        .rposition(|m| m.role == Role::User)
        .is_some_and(|last| {
            req.messages[last + 1..]
                .iter()
                .any(|m| matches!(m.role, Role::System | Role::Developer))
        });
    tools || trailing
}

fn is_housekeeping(req: &ChatRequest) -> bool {
    let quotes = req
        .messages
        .iter()
        .filter(|m| m.role == Role::User)
        .any(|m| quotes_a_transcript(&text_of(m)));
    if quotes {
        return true;
    }
    // A one-shot task: instructions that name one, and no answer yet in the prompt.
    let answered = req.messages.iter().any(|m| m.role == Role::Assistant);
    let task = req
        .messages
        .iter()
        .filter(|m| matches!(m.role, Role::System | Role::Developer))
        .any(|m| {
            let t = text_of(m).to_lowercase();
            TASKS.iter().any(|w| t.contains(w))
        });
    task && !answered
}

/// Whether a text quotes a conversation: two or more of its lines open with a speaker
/// (`user:`, `assistant:` …) and both sides speak, or it wraps turns in tags
/// (`<chat_history>`, `<user>…</user>`).
pub fn quotes_a_transcript(text: &str) -> bool {
    let lower = text.to_lowercase();
    if lower.contains("<chat_history>")
        || (lower.contains("<user>") && lower.contains("</user>"))
        || (lower.contains("<assistant>") && lower.contains("</assistant>"))
    {
        return true;
    }
    let (mut person, mut model) = (0, 0);
    for line in lower.lines() {
        let line = line.trim_start();
        let Some((speaker, _)) = line.split_once(':') else {
            continue;
        };
        match speaker.trim() {
            "user" | "human" | "me" => person += 1,
            "assistant" | "ai" | "bot" | "model" | "chatbot" => model += 1,
            _ => {}
        }
    }
    person >= 1 && model >= 1 && person + model >= 2
}

fn text_of(m: &Message) -> String {
    m.content.as_ref().map(|c| c.text()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: serde_json::Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    fn fixture(name: &str) -> ChatRequest {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/clients")
            .join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn lobechats_title_task_is_housekeeping() {
        let title = fixture("lobechat-1.143-topic-title.json");
        assert_eq!(classify(&title), Traffic::Housekeeping);
    }

    #[test]
    fn summaries_and_translations_are_housekeeping_by_shape() {
        // LobeChat's history compression: the older turns quoted in tags.
        let summary = req(serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "You're an assistant who's good at extracting key takeaways from conversations and summarizing them."},
            {"role": "user", "content": "<chat_history><user>I moved to Lyon</user><assistant>Nice!</assistant></chat_history>\n\nPlease summarize the above conversation and retain key information. The summarized content will be used as context for subsequent prompts, and should be limited to 400 tokens."}
        ]}));
        assert_eq!(classify(&summary), Traffic::Housekeeping);
        // Another client's title task, worded differently, transcript without tags.
        let title = req(serde_json::json!({"model": "m", "messages": [
            {"role": "user", "content": "Name this chat in five words.\n\nUser: how do I boil an egg?\nAssistant: Put it in boiling water for 9 minutes."}
        ]}));
        assert_eq!(classify(&title), Traffic::Housekeeping);
        let translate = req(serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "Translate the user's text into German. Output only the translation."},
            {"role": "user", "content": "The weather is lovely today."}
        ]}));
        assert_eq!(classify(&translate), Traffic::Housekeeping);
    }

    #[test]
    fn conversations_stay_conversations() {
        let chat = req(serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "I write Python all day. Any tips for long meetings?"},
        ]}));
        assert_eq!(classify(&chat), Traffic::Conversation);
        // A persona that summarises, once it has answered, is a conversation.
        let persona = req(serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "You summarize news for the user."},
            {"role": "user", "content": "What happened today?"},
            {"role": "assistant", "content": "Markets rose."},
            {"role": "user", "content": "And in sport?"}
        ]}));
        assert_eq!(classify(&persona), Traffic::Conversation);
        // One speaker line alone is not a transcript.
        assert!(!quotes_a_transcript("Note: user: is a field name here"));
    }

    #[test]
    fn tools_and_trailing_reminders_are_agent_traffic() {
        let aider = req(serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "Act as an expert software developer."},
            {"role": "user", "content": "I switched to a new codebase."},
            {"role": "assistant", "content": "Ok."},
            {"role": "user", "content": "Add a --verbose flag."},
            {"role": "system", "content": "Reply with SEARCH/REPLACE blocks."}
        ]}));
        assert_eq!(classify(&aider), Traffic::Agent);
        let tools = req(serde_json::json!({"model": "m", "messages": [
            {"role": "user", "content": "What's the weather?"}
        ], "tools": [{"type": "function", "function": {"name": "weather", "parameters": {}}}]}));
        assert_eq!(classify(&tools), Traffic::Agent);
    }

    #[test]
    fn a_chat_offering_only_lyss_memory_tools_stays_a_conversation() {
        // LobeChat 1.143 with lyss's MCP server installed as a plugin: every message offers the
        // five tools (names as LobeChat builds them), and a call and its result stay in the
        // history of the chat.
        let offered: Vec<serde_json::Value> = MEMORY_TOOLS
            .iter()
            .map(|t| serde_json::json!({"type": "function", "function": {"name": format!("lyss-memory____{t}____mcp"), "parameters": {}}}))
            .collect();
        let chat = req(serde_json::json!({"model": "m", "messages": [
            {"role": "developer", "content": "<plugins description=\"The plugins you can use below\">…</plugins>"},
            {"role": "user", "content": "Please remember that I am vegetarian."},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lyss-memory____remember____mcp", "arguments": "{\"text\": \"I am vegetarian\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Remembered (profile): I am vegetarian"},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "What should I cook tonight?"}
        ], "tools": offered}));
        assert_eq!(classify(&chat), Traffic::Conversation);
        // Another tool beside them, or a call of another tool in the history: an agent.
        let mut with_shell = chat.clone();
        with_shell.tools.get_or_insert_default().push(
            serde_json::from_value(serde_json::json!({"type": "function", "function": {"name": "shell", "parameters": {}}})).unwrap(),
        );
        assert_eq!(classify(&with_shell), Traffic::Agent);
        let mut called_other = chat.clone();
        called_other.messages[2].tool_calls.as_mut().unwrap()[0]
            .function
            .as_mut()
            .unwrap()
            .name = Some("shell".into());
        assert_eq!(classify(&called_other), Traffic::Agent);
        // How other MCP clients name them; names that only contain the words are not them.
        for name in ["remember", "mcp__lyss__search_memories", "lyss_get_profile"] {
            assert!(is_memory_tool(name), "{name}");
        }
        for name in ["remembered", "forget_memory_all", "shell", "x__rememberme"] {
            assert!(!is_memory_tool(name), "{name}");
        }
    }
}

//! The profile: what a person says about themselves that should shape every answer — who they
//! are, how they want answers, constraints such as an allergy or units — picked out of their
//! own messages by rules, so that a new chat that needs it without naming it still gets it.
//!
//! Rules, not a model: they run on every user message on the request path (microseconds), cost
//! no tokens, and say why a sentence was taken. They look for statements, never questions:
//! - identity and work: "I'm a nurse", "I work as …", "I write Python all day", "my name is …",
//!   "I live in …";
//! - lasting preferences and constraints: "I prefer …", "I'm allergic to …", "I'm vegetarian",
//!   "I don't eat …", "I can't stand …";
//! - standing instructions about answers: "keep answers short", "use metric units", "always
//!   answer in French", "please be concise".
//!
//! Events and moods ("I went hiking", "I'm so excited") are not profile: they are recalled by
//! relevance like every other turn.

/// A profile line is one sentence of at most this many bytes (a long sentence is a story).
const MAX_SENTENCE: usize = 160;

/// Openings of identity, work and constraint statements (lower-case, after "I"/"I'm"/"my").
const ABOUT_ME: &[&str] = &[
    "i'm a ",
    "i'm an ",
    "i am a ",
    "i am an ",
    "i work as",
    "i work at",
    "i work in",
    "i work for",
    "i work with",
    "i'm working as",
    "i'm working at",
    "my job",
    "my name is",
    "my name's",
    "call me ",
    "i live in",
    "i live near",
    "i'm based in",
    "i'm from ",
    "i come from",
    "i moved to",
    "i write ",
    "i code ",
    "i program ",
    "i develop ",
    "i mostly use",
    "i prefer",
    "i'd prefer",
    "i would prefer",
    "i'm allergic",
    "i am allergic",
    "i have an allergy",
    "i'm intolerant",
    "i am intolerant",
    "i'm lactose",
    "i'm vegetarian",
    "i'm vegan",
    "i am vegetarian",
    "i am vegan",
    "i'm pescatarian",
    "i'm gluten",
    "i'm diabetic",
    "i have diabetes",
    "i have celiac",
    "i have coeliac",
    "i don't eat",
    "i do not eat",
    "i don't drink",
    "i can't eat",
    "i cannot eat",
    "i avoid ",
    "i can't stand",
    "i dislike",
    "i'm not a fan of",
    "my favorite",
    "my favourite",
    "i speak ",
    "i'm studying",
    "i study ",
    "i teach ",
    "i'm retired",
    "i'm married",
    "i'm single",
    "i'm blind",
    "i'm deaf",
    "i'm colorblind",
    "i'm colourblind",
    "i'm left-handed",
    "my timezone",
    "my time zone",
];

/// How a standing instruction about answers opens (after an optional "please").
const INSTRUCTION_OPENINGS: &[&str] = &[
    "keep ",
    "use ",
    "always ",
    "never ",
    "don't ",
    "do not ",
    "answer ",
    "respond ",
    "reply ",
    "write ",
    "be ",
    "give me ",
    "avoid ",
    "stick to ",
    "no ",
    "from now on",
    "in the future",
    "going forward",
];

/// What a standing instruction is about (one of these words must be in it).
const ABOUT_ANSWERS: &[&str] = &[
    "answer",
    "response",
    "reply",
    "replies",
    "explanation",
    "short",
    "concise",
    "brief",
    "detail",
    "verbose",
    "bullet",
    "metric",
    "imperial",
    "celsius",
    "fahrenheit",
    "units",
    "language",
    "english",
    "french",
    "german",
    "spanish",
    "italian",
    "portuguese",
    "dutch",
    "chinese",
    "japanese",
    "formal",
    "informal",
    "casual",
    "emoji",
    "jargon",
    "simple",
    "plain",
    "code",
    "example",
    "markdown",
    "format",
    "tone",
    "sources",
    "summary",
    "tl;dr",
    "step by step",
    "24-hour",
    "date format",
];

/// Words after "I'm a"/"I am a" that make a mood or an event, not who someone is.
const NOT_IDENTITY: &[&str] = &[
    "bit ", "little ", "lot ", "big fan", "fan of", "huge fan", "mess", "wreck",
];

/// The sentences of a user's message that belong in their profile, as said (trimmed).
pub fn statements(text: &str) -> Vec<String> {
    sentences(text)
        .into_iter()
        .filter(|s| is_profile(s))
        .map(|s| s.trim().to_owned())
        .collect()
}

/// A message cut into sentences at `.`, `!`, `?`, `;` followed by a space, and at line breaks.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let end = match b {
            b'\n' => Some(i),
            b'.' | b'!' | b'?' | b';' => {
                (i + 1 == bytes.len() || bytes[i + 1] == b' ' || bytes[i + 1] == b'\n')
                    .then_some(i + 1)
            }
            _ => None,
        };
        if let Some(end) = end {
            let s = text[start..end].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = end;
        }
    }
    let s = text[start..].trim();
    if !s.is_empty() {
        out.push(s);
    }
    out
}

fn is_profile(sentence: &str) -> bool {
    if sentence.len() > MAX_SENTENCE || sentence.ends_with('?') {
        return false;
    }
    let lower = sentence
        .to_lowercase()
        .replace('’', "'")
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .to_owned();
    // "Hi! I'm …", "Also, I'm …", "Btw I …": the statement starts after a short lead-in.
    let lower = strip_lead_in(&lower);
    let hypothetical = ["if ", "when ", "maybe ", "perhaps ", "what if"]
        .iter()
        .any(|w| lower.starts_with(w));
    if hypothetical {
        return false;
    }
    if let Some(rest) = ABOUT_ME.iter().find_map(|o| lower.strip_prefix(o)) {
        let identity_opening = ["i'm a ", "i'm an ", "i am a ", "i am an "]
            .iter()
            .any(|o| lower.starts_with(o));
        return !(identity_opening && NOT_IDENTITY.iter().any(|w| rest.starts_with(w)));
    }
    let instruction = lower.strip_prefix("please ").unwrap_or(lower);
    let standing = INSTRUCTION_OPENINGS
        .iter()
        .any(|o| instruction.starts_with(o))
        && ABOUT_ANSWERS.iter().any(|w| instruction.contains(w))
        && !instruction.contains(" you ");
    let wants = [
        "i like my answers",
        "i want answers",
        "i like short",
        "i like concise",
    ]
    .iter()
    .any(|o| lower.starts_with(o));
    standing || wants
}

/// A statement's opening after a short lead-in ("also, ", "btw ", "oh and ", "just so you
/// know, ").
fn strip_lead_in(lower: &str) -> &str {
    let mut s = lower;
    for _ in 0..2 {
        let next = [
            "also, ",
            "also ",
            "btw, ",
            "btw ",
            "by the way, ",
            "oh and ",
            "and ",
            "fyi, ",
            "fyi ",
            "just so you know, ",
            "for context, ",
            "for the record, ",
            "note: ",
            "well, ",
            "so ",
            "ok, ",
            "okay, ",
            "hi, ",
            "hey, ",
        ]
        .iter()
        .find_map(|p| s.strip_prefix(p));
        match next {
            Some(rest) => s = rest,
            None => break,
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_about_oneself_and_standing_instructions_are_profile() {
        for said in [
            "I write Python all day.",
            "Keep answers short.",
            "I'm allergic to peanuts.",
            "Please use metric units.",
            "I'm a nurse working night shifts.",
            "Always answer in French.",
            "I'm vegetarian.",
            "My name is Ada.",
            "I live in Lyon with two cats.",
            "Btw, I prefer TypeScript over JavaScript.",
        ] {
            assert_eq!(statements(said), [said.to_owned()], "{said}");
        }
        assert_eq!(
            statements("Hi there! I'm a data engineer. Can you help me with SQL?"),
            ["I'm a data engineer."]
        );
    }

    #[test]
    fn questions_events_moods_and_requests_to_the_model_are_not() {
        for said in [
            "Can you keep it short?",
            "I went hiking with my friends last weekend.",
            "I'm so excited about the concert!",
            "I'm a bit tired today.",
            "That sounds great, thanks!",
            "If I were vegetarian, what would I eat?",
            "Write a poem about the sea.",
            "What's a good snack for a long hike?",
        ] {
            assert!(
                statements(said).is_empty(),
                "{said}: {:?}",
                statements(said)
            );
        }
    }
}

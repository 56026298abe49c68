//! The profile: what a person says about themselves that should shape every answer — who they
//! are, how they want answers, constraints such as an allergy or units — picked out of their
//! own messages by rules, so that a new chat that needs it without naming it still gets it.
//!
//! Rules, not a model: they run on every user message on the request path (microseconds), cost
//! no tokens, and say why a sentence was taken. They look for statements, never questions:
//! - identity, work and circumstances: "I'm a nurse", "I work night shifts", "I run a bakery",
//!   "I write Python all day", "my name is …", "I live in …", "I'm 68", "I'm pregnant",
//!   "I have two kids", "I'm training for a marathon", "I'm on a tight budget";
//! - lasting preferences and constraints: "I prefer …", "I'm allergic to …", "I'm vegetarian",
//!   "I keep kosher", "I only drink decaf", "I use a Mac", "I hate cilantro", "I don't eat …",
//!   and a family's ("my partner is allergic to cats", "we eat halal");
//! - standing instructions about answers: "keep answers short", "use metric units", "always
//!   answer in French", "answer with bullet points whenever you can", "explain things to me
//!   like I'm a beginner", "I don't like long explanations".
//!
//! Events, moods and the matter at hand ("I went hiking", "I'm so excited", "I'm looking for a
//! gift", "I have a question", "I use this function in my script") are not profile: they are
//! recalled by relevance like every other turn.

/// A profile line is one sentence of at most this many bytes (a long sentence is a story).
const MAX_SENTENCE: usize = 160;

mod words;

use self::words::*;

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
    let lower = sentence.to_lowercase().replace('’', "'");
    // Typed in a hurry: "im vegetarian", "i dont eat pork".
    let lower = lower
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .split(' ')
        .map(|w| match w {
            "im" => "i'm",
            "ive" => "i've",
            "dont" => "don't",
            "cant" => "can't",
            "doesnt" => "doesn't",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(" ");
    let hypothetical = [
        "if ", "maybe ", "perhaps ", "what if", "suppose ", "imagine ",
    ]
    .iter()
    .any(|w| strip_lead_in(&lower).starts_with(w));
    if hypothetical {
        return false;
    }
    // The statement may be the whole sentence or one of its clauses: "Quick one — I'm a
    // dentist", "English isn't my first language, so please use simple words".
    clauses(&lower).any(|c| about_oneself(&normalise(strip_lead_in(c)), &lower))
}

/// A sentence, then each part of it after a comma, a colon, a dash, "because" or "but", and
/// from an "I" a few words in ("hey so I'm a paramedic").
fn clauses(lower: &str) -> impl Iterator<Item = &str> {
    let cuts = lower
        .match_indices([',', ':', '—', '–'])
        .map(|(i, sep)| i + sep.len())
        .chain(
            [" - ", " because ", " but "]
                .into_iter()
                .flat_map(|w| lower.match_indices(w).map(|(i, w)| i + w.len())),
        )
        .chain(
            lower
                .match_indices(" i")
                .map(|(i, _)| i + 1)
                .filter(|&i| i <= 16 && ["i ", "i'"].iter().any(|s| lower[i..].starts_with(s))),
        );
    std::iter::once(lower).chain(cuts.map(|i| lower[i..].trim_start()))
}

/// One way of saying each thing: "I've got" is "I have", "I've been a nurse for years" is
/// "I'm a nurse for years", "let's keep it brief" is "keep it brief".
fn normalise(clause: &str) -> std::borrow::Cow<'_, str> {
    for (from, to) in [
        ("i've got ", "i have "),
        ("i have got ", "i have "),
        ("i've been living ", "i live "),
        ("i've been working ", "i work "),
        ("i've lived ", "i live "),
        ("i've worked ", "i work "),
        ("i have lived ", "i live "),
        ("i have worked ", "i work "),
        ("i've been ", "i'm "),
        ("i have been ", "i'm "),
        ("let's ", ""),
        ("let us ", ""),
    ] {
        if let Some(rest) = clause.strip_prefix(from) {
            return format!("{to}{rest}").into();
        }
    }
    clause.into()
}

/// Whether a clause (lower-case, lead-in stripped) is a statement about oneself or a standing
/// instruction about answers, in `sentence`.
fn about_oneself(lower: &str, sentence: &str) -> bool {
    if let Some(rest) = ABOUT_ME.iter().find_map(|o| lower.strip_prefix(o)) {
        let identity_opening = ["i'm a ", "i'm an ", "i am a ", "i am an "]
            .iter()
            .any(|o| lower.starts_with(o));
        // "I'm learning a lot from this" is a mood; "I'm learning German" is who one is.
        let learning = lower.starts_with("i'm learning") || lower.starts_with("i am learning");
        let not_a_subject = [
            "a lot", "so much", "that ", "about ", "from ", "more ", "new ",
        ]
        .iter()
        .any(|w| rest.starts_with(w));
        return !(identity_opening && NOT_IDENTITY.iter().any(|w| rest.starts_with(w))
            || learning && not_a_subject);
    }
    let passing = PASSING.iter().any(|w| sentence.contains(w));
    about_me(lower) || !passing && lasting_trait(lower) || standing_instruction(lower, sentence)
}

/// The statements about oneself that take more than an opening: one's age, what one has, a
/// habit, a job, a dislike, a family member's constraint.
fn about_me(lower: &str) -> bool {
    let am = lower
        .strip_prefix("i'm ")
        .or_else(|| lower.strip_prefix("i am "));
    // "I'm 68", "I'm 34 years old": an age.
    if am.is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit())) {
        return true;
    }
    // "English is my second language".
    if [
        "my first language",
        "my second language",
        "my native language",
        "my mother tongue",
    ]
    .iter()
    .any(|l| lower.contains(l))
    {
        return true;
    }
    // "I'm in the Central European time zone".
    if (am.is_some() || lower.starts_with("my ")) && lower.contains("time zone") {
        return true;
    }
    if let Some(rest) = lower.strip_prefix("i have ") {
        // "I have a golden retriever named Max".
        let named =
            rest.starts_with('a') && (rest.contains(" named ") || rest.contains("-year-old"));
        // "I have two kids", "two young kids", "three cats and a rabbit".
        let counted = NUMBERS
            .iter()
            .find_map(|n| rest.strip_prefix(n))
            .is_some_and(|r| {
                r.split(' ')
                    .take(2)
                    .any(|w| COUNTED.iter().any(|c| w.starts_with(c)))
            });
        return named || counted || HAVE.iter().any(|h| rest.starts_with(h)) && !at_hand(rest);
    }
    // What one's body does not take: "gluten makes me really sick".
    if [
        "makes me sick",
        "makes me ill",
        "make me sick",
        "make me ill",
        "makes me really sick",
        "gives me hives",
        "gives me migraines",
        "gives me headaches",
        "i react badly to",
        "doesn't agree with me",
        "deadly for me",
        "dangerous for me",
        "poison for me",
        "bad for me",
        "don't agree with me",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        return true;
    }
    // "I work night shifts", "I work from home", "I work remotely".
    if lower.starts_with("i work ") {
        return true;
    }
    // "I don't like long explanations", "I don't drive".
    if let Some(rest) = lower
        .strip_prefix("i don't ")
        .or_else(|| lower.strip_prefix("i do not "))
    {
        return ["like ", "drink ", "use ", "drive", "own ", "smoke", "eat "]
            .iter()
            .any(|v| rest.starts_with(v))
            && !at_hand(rest.split_once(' ').map_or("", |(_, o)| o));
    }
    // "My partner is allergic to cats": a constraint of the family one cooks and plans for.
    if let Some(rest) = lower.strip_prefix("my ") {
        let family = [
            "partner",
            "wife",
            "husband",
            "son",
            "daughter",
            "kids",
            "children",
            "boyfriend",
            "girlfriend",
            "family",
            "baby",
            "toddler",
            "mother",
            "father",
            "mom",
            "mum",
            "dad",
            "parents",
            "grandmother",
            "grandfather",
        ];
        let constraint = [
            "allergic",
            "allergy",
            "intolerance",
            "diabetes",
            "gluten",
            "kosher",
            "halal",
            "vegetarian",
            "vegan",
            "intolerant",
            "diabetic",
            "celiac",
            "coeliac",
            "doesn't eat",
            "don't eat",
            "can't eat",
            " years old",
            "lives with",
            "live with",
            "walker",
            "wheelchair",
            "dementia",
            "disab",
        ];
        let age = [" is ", " are "].iter().any(|v| {
            rest.split_once(v)
                .is_some_and(|(_, r)| r.starts_with(|c: char| c.is_ascii_digit()))
        });
        return family.iter().any(|f| rest.starts_with(f))
            && (age || constraint.iter().any(|c| rest.contains(c)));
    }
    // "I run a small coffee shop", "I only drink decaf", "I hate cilantro".
    let Some(mut rest) = lower.strip_prefix("i ") else {
        return false;
    };
    if let Some(r) = HABIT_ADVERBS.iter().find_map(|a| rest.strip_prefix(a)) {
        rest = r;
    }
    HABITS
        .iter()
        .find_map(|v| rest.strip_prefix(v))
        .is_some_and(|object| !object.is_empty() && !at_hand(object))
}

/// A first-person statement with a word of what lasts in it (in a sentence with nothing
/// [`PASSING`]).
fn lasting_trait(lower: &str) -> bool {
    let first_person = [
        "i ",
        "i'm ",
        "i am ",
        "i've ",
        "i can't ",
        "i cannot ",
        "my ",
        "we ",
        "we're ",
        "we are ",
        "our ",
    ]
    .iter()
    .any(|o| lower.starts_with(o));
    // "I went …", "I visited …": an event.
    let past = lower
        .strip_prefix("i ")
        .and_then(|rest| rest.split(' ').next())
        .is_some_and(|verb| {
            verb.ends_with("ed")
                || [
                    "went", "saw", "did", "had", "was", "got", "made", "took", "came", "bought",
                    "found", "gave", "told", "thought", "felt", "left", "met", "ran", "wrote",
                    "spoke", "began", "ate", "drank", "heard", "won", "lost",
                ]
                .contains(&verb)
        });
    lower.len() <= 120 && first_person && !past && LASTING.iter().any(|w| lower.contains(w))
}

/// Whether what follows a verb is the matter at hand ("this", "the following code", "your
/// answer") rather than a lasting object.
fn at_hand(object: &str) -> bool {
    AT_HAND.iter().any(|w| object.starts_with(w))
}

/// A standing instruction about answers: "keep answers short", "please use metric units",
/// "answer with bullet points whenever you can", "short answers only".
fn standing_instruction(lower: &str, sentence: &str) -> bool {
    let instruction = lower.strip_prefix("please ").unwrap_or(lower);
    // One-off requests point at something already said ("use the example you gave").
    let points_back = [
        " you said",
        " you gave",
        " you wrote",
        " you just",
        " you mentioned",
        " you suggested",
        " you showed",
        " you used",
        " you did",
        " you made",
    ]
    .iter()
    .any(|w| instruction.contains(w));
    // How to speak to the person needs no word about answers: "talk to me like a friend".
    let to_me = [
        "explain things",
        "explain everything",
        "talk to me",
        "speak to me",
        "treat me",
        "assume i",
        "address me",
    ]
    .iter()
    .any(|o| instruction.starts_with(o));
    // An imperative that says it holds from now on: "spell out acronyms when you use them",
    // "format everything as tables", "always show your reasoning briefly".
    let verb = ["always ", "never ", "don't ", "do not "]
        .iter()
        .find_map(|a| instruction.strip_prefix(a))
        .unwrap_or(instruction)
        .split(' ')
        .next()
        .unwrap_or_default();
    let marked = IMPERATIVES.contains(&verb)
        && [
            "always",
            "never",
            "from now on",
            "whenever",
            "when you",
            "every time",
            "everything",
            "anything you",
            "all your",
            "in future",
            "going forward",
            "each time",
            "by default",
            "for all ",
            "for any ",
        ]
        .iter()
        .any(|m| sentence.contains(m))
        && !instruction.contains("when you can");
    // "Give me …" and "write …" open requests as often as standing instructions: only one about
    // answers or all code ("give me answers in Celsius", "write all code examples in Kotlin")
    // stands ("give me a short summary" does not).
    let request_opening = ["give me ", "write "]
        .iter()
        .any(|o| instruction.starts_with(o))
        && ![
            "answers",
            "replies",
            "responses",
            "all code",
            "all examples",
            "every answer",
        ]
        .iter()
        .any(|w| instruction.contains(w));
    let standing = (to_me
        || marked
        || !request_opening
            && INSTRUCTION_OPENINGS
                .iter()
                .any(|o| instruction.starts_with(o))
            && ABOUT_ANSWERS.iter().any(|w| instruction.contains(w)))
        && !points_back;
    // "Short answers only, please", "concise replies work best for me".
    let styled = ![
        "i ", "i'", "we ", "we'", "my ", "our ", "they ", "he ", "she ",
    ]
    .iter()
    .any(|s| instruction.starts_with(s))
        && ["answers", "replies", "responses", "explanations"]
            .iter()
            .any(|w| instruction.contains(w))
        && [
            "short", "concise", "brief", "detailed", "simple", "plain", "long", "bullet", "formal",
            "casual",
        ]
        .iter()
        .any(|w| instruction.contains(w));
    // ("I prefer short …", "I don't like long …" and "I want answers …" are taken above.)
    let wants = ["i like my answers", "i like short", "i like concise"]
        .iter()
        .any(|o| lower.starts_with(o));
    standing || styled || wants
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
            "actually, ",
            "actually ",
            "anyway, ",
            "so, ",
            "oh, ",
            "first, ",
            "first of all, ",
            "heads up, ",
            "just a heads up, ",
            "fwiw, ",
            "fwiw ",
            "for what it's worth, ",
            "in case it matters, ",
            "in case it helps, ",
            "to be clear, ",
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
mod tests;

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
    "i'm hard of hearing",
    "i'm visually impaired",
    "i'm partially sighted",
    "i'm color-blind",
    "i'm colour-blind",
    "i'm introverted",
    "i'm up at",
    "i wake up at",
    "i get up at",
    "i go to bed at",
    "i'm canadian",
    "i'm american",
    "i'm british",
    "i'm english",
    "i'm scottish",
    "i'm welsh",
    "i'm irish",
    "i'm australian",
    "i'm french",
    "i'm german",
    "i'm italian",
    "i'm spanish",
    "i'm portuguese",
    "i'm brazilian",
    "i'm mexican",
    "i'm dutch",
    "i'm swiss",
    "i'm polish",
    "i'm swedish",
    "i'm norwegian",
    "i'm danish",
    "i'm finnish",
    "i'm indian",
    "i'm chinese",
    "i'm japanese",
    "i'm korean",
    "i'm nigerian",
    "i'm kenyan",
    "i'm south african",
    "i'm on medication",
    "i'm on insulin",
    "i'm training to",
    "i'm studying to",
    "i'm into ",
    "i'm really into ",
    "i suffer from",
    "i struggle with",
    "i live ",
    "we're expecting",
    "we are expecting",
    "i'm expecting",
    "as a ",
    "as an ",
    "i'm pregnant",
    "i am pregnant",
    "i'm expecting a",
    "i'm learning ",
    "i am learning ",
    "i'm training for",
    "i'm recovering from",
    "i'm on a budget",
    "i'm on a tight budget",
    "i'm on a diet",
    "i'm new to ",
    "i'm fluent in",
    "i'm self-employed",
    "i'm unemployed",
    "i'm divorced",
    "i'm widowed",
    "i'm engaged",
    "i'm disabled",
    "i'm autistic",
    "i'm dyslexic",
    "i'm epileptic",
    "i'm asthmatic",
    "i'm sober",
    "i'm muslim",
    "i'm jewish",
    "i'm christian",
    "i'm catholic",
    "i'm hindu",
    "i'm buddhist",
    "i'm recently ",
    "i'm nearsighted",
    "i'm short-sighted",
    "i keep kosher",
    "i keep halal",
    "i eat halal",
    "i eat kosher",
    "i'm a wheelchair",
    "i use a wheelchair",
    "i wear glasses",
    "my pronouns",
    "my native language",
    "my first language",
    "my mother tongue",
    "our family",
    "we're vegetarian",
    "we're vegan",
    "we are vegetarian",
    "we are vegan",
    "we eat ",
    "we don't eat",
    "we live in",
];

/// What may follow "I have " in a statement about oneself: family, pets, a lasting condition
/// (never "a question", "a problem" or the file at hand).
const HAVE: &[&str] = &[
    "kids",
    "children",
    "a son",
    "a daughter",
    "sons",
    "daughters",
    "twins",
    "a baby",
    "a toddler",
    "a newborn",
    "grandchildren",
    "grandkids",
    "a husband",
    "a wife",
    "a partner",
    "a boyfriend",
    "a girlfriend",
    "a dog",
    "a cat",
    "dogs",
    "cats",
    "a puppy",
    "a kitten",
    "pets",
    "a pet",
    "a horse",
    "asthma",
    "adhd",
    "autism",
    "dyslexia",
    "epilepsy",
    "arthritis",
    "migraines",
    "high blood pressure",
    "a disability",
    "a chronic",
    "a heart condition",
    "a bad back",
    "a bad knee",
    "a nut allergy",
    "a peanut allergy",
    "a food allergy",
    "an intolerance",
    "a gluten",
    "type 1",
    "type 2",
    "no kids",
    "no children",
    "no car",
    "two ",
    "three ",
    "four ",
    "five ",
    "six ",
    "2 ",
    "3 ",
    "4 ",
    "5 ",
];

/// Verbs of a habit or a lasting aversion after "I" (and an optional "only", "mostly" …): "I
/// use a Mac", "I run a coffee shop", "I only drink decaf", "I hate cilantro". Not "I love …"
/// or "I like …": in chit-chat they are mostly about the moment ("I love creating art!"), and
/// every profile line rides on every later request.
const HABITS: &[&str] = &[
    "use ",
    "run ",
    "own ",
    "eat ",
    "drink ",
    "cook ",
    "drive ",
    "ride ",
    "play ",
    "wear ",
    "follow ",
    "hate ",
    "practise ",
    "practice ",
    "homeschool ",
];

/// What a habit verb's object is when the sentence is about the matter at hand, not a habit:
/// "I like this", "I use the following code", "I love your answer".
const AT_HAND: &[&str] = &[
    "this",
    "that",
    "it ",
    "it.",
    "it,",
    "it!",
    "these",
    "those",
    "the following",
    "the code",
    "the script",
    "the same",
    "the error",
    "the example",
    "the above",
    "the answer",
    "the first",
    "the last",
    "the previous",
    "your",
    "you",
    "my code",
    "my script",
    "my function",
    "how ",
    "what ",
    "when ",
    "all the",
    "to know",
    "to ask",
    "to see",
    "to get",
    "to have",
    "to be",
    "a question",
    "an idea",
];

/// Adverbs between "I" and a habit verb.
const HABIT_ADVERBS: &[&str] = &[
    "only ",
    "mostly ",
    "mainly ",
    "usually ",
    "always ",
    "never ",
    "generally ",
    "often ",
    "also ",
    "really ",
    "absolutely ",
    "just ",
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
    "whenever you answer",
    "could you stop",
    "can you stop",
    "stop ",
    "i always want",
    "i want ",
    "when you answer",
    "when answering",
    "in your answers",
    "in your replies",
];

/// Verbs an instruction about answers opens with.
const IMPERATIVES: &[&str] = &[
    "use",
    "write",
    "answer",
    "reply",
    "respond",
    "keep",
    "give",
    "show",
    "format",
    "spell",
    "explain",
    "include",
    "add",
    "put",
    "list",
    "cite",
    "avoid",
    "stop",
    "start",
    "make",
    "talk",
    "speak",
    "call",
    "address",
    "treat",
    "assume",
    "be",
    "sign",
    "end",
    "begin",
    "translate",
    "convert",
    "number",
    "mark",
    "tell",
    "mention",
    "round",
    "quote",
    "link",
    "label",
    "state",
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
    "beginner",
    "expert",
    "british",
    "american",
    "spelling",
    "sentences",
    "technical",
    "terms",
    "plain english",
    "layman",
    "paragraph",
    "numbered",
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
fn normalise(clause: &str) -> String {
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
            return format!("{to}{rest}");
        }
    }
    clause.to_owned()
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
        return named || HAVE.iter().any(|h| rest.starts_with(h)) && !at_hand(rest);
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

/// Words of what lasts about a person — health, diet, faith, family, language, origin, work,
/// skills — as a person says them in any order ("I'm severely allergic to bees", "I can't have
/// caffeine because of my heart", "we're a family of five").
const LASTING: &[&str] = &[
    "allerg",
    "intoleran",
    "diet",
    "vegetarian",
    "vegan",
    "pescatarian",
    "kosher",
    "halal",
    "gluten",
    "lactose",
    "dairy",
    "caffeine",
    "alcohol",
    "sober",
    "diabet",
    "celiac",
    "coeliac",
    "pregnan",
    "autis",
    "adhd",
    "dyslex",
    "epilep",
    "asthma",
    "arthritis",
    "migraine",
    "disab",
    "wheelchair",
    "deaf",
    "blind",
    "hearing",
    "eyesight",
    "native language",
    "first language",
    "mother tongue",
    "fluent",
    "years old",
    "years young",
    "born in",
    "grew up",
    "originally",
    "family of",
    "phd",
    "degree in",
    "for a living",
    "my job",
    "my career",
    "profession",
    "retired",
    "terrible at",
    "bad at",
    "good at",
    "not good with",
    "shy",
    "introvert",
    "night owl",
    "early bird",
    "microwave",
    "no car",
    "a car",
    "vegetables",
    "meat",
    "fish",
    "pork",
    "beef",
    "spicy",
    "sugar",
    "shift work",
    "night shift",
    "medication",
    "blood thinner",
    "insulin",
    "chemo",
    "salt",
    "sodium",
];

/// What marks an event, a mood or the request at hand rather than something lasting.
const PASSING: &[&str] = &[
    "yesterday",
    "last week",
    "last month",
    "last night",
    "this morning",
    "today",
    "tonight",
    "tomorrow",
    " ago",
    "earlier",
    "just ",
    "this weekend",
    "next week",
    "right now",
    "can you",
    "could you",
    "help me",
    "i need",
    "i want to",
    "i'd like",
    "looking for",
    "trying to",
    "wondering",
    "thinking about",
    "planning",
    "going to",
    "about to",
    "error",
    "my code",
    "feel ",
    "feeling",
    "so excited",
    "so happy",
    "so tired",
    "thinking of",
    "considering",
    "hope",
    "goal",
    "dream",
    "i want",
    "love ",
    "lately",
    "next month",
    "excited",
    "thrilled",
];

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
        || ["keep getting", "keep having", "keep seeing"]
            .iter()
            .any(|w| object.starts_with(w))
}

/// A standing instruction about answers: "keep answers short", "please use metric units",
/// "answer with bullet points whenever you can", "I don't like long explanations".
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
    let standing = (to_me
        || marked
        || INSTRUCTION_OPENINGS
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
    let wants = [
        "i like my answers",
        "i want answers",
        "i like short",
        "i like concise",
        "i don't like long",
        "i don't like lengthy",
        "i prefer short",
    ]
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
    fn lasting_facts_said_in_many_ways_are_profile() {
        for said in [
            // Work, age, circumstances.
            "I work night shifts at a hospital.",
            "I run a small coffee shop.",
            "I'm 68 and recently retired.",
            "I've worked as an accountant for twenty years.",
            "As a nurse on the pediatric ward, I see a lot of flu cases.",
            "I'm training for my first marathon.",
            "I'm on a tight budget this year.",
            "I'm doing a PhD in physics.",
            "hey so im a paramedic.",
            // Family and home.
            "I have two kids under five.",
            "I have a golden retriever named Max.",
            "My kids are 4 and 7.",
            "My partner is allergic to cats.",
            "My mother lives with us and uses a walker.",
            "We're a family of five living in Texas.",
            "We're expecting our first baby in March.",
            // Health, diet, faith.
            "I'm severely allergic to bees.",
            "Gluten makes me really sick.",
            "Dairy doesn't agree with me.",
            "I can't have caffeine because of my heart.",
            "I keep kosher.",
            "Our family is Muslim and we eat halal.",
            "I'm on blood thinners.",
            "I'm pregnant, 20 weeks along.",
            "I suffer from insomnia.",
            "I only drink decaf.",
            "I hate cilantro.",
            // Place, language, habits.
            "I'm Canadian, living in Montreal.",
            "I've lived in Japan for ten years.",
            "English is my second language.",
            "I'm in the Central European time zone.",
            "I use a Mac at work and at home.",
            "I'm into rock climbing on weekends.",
            "I'm learning German and I'm at A2 level.",
            // Standing instructions.
            "Short answers only please.",
            "Answer with bullet points whenever you can.",
            "Explain things to me like I'm a beginner.",
            "Spell out acronyms when you use them.",
            "Please format everything as Markdown tables where possible.",
            "For all code, use TypeScript.",
            "Could you stop using so much jargon.",
            "I don't like long explanations, just give me the answer.",
            "Let's keep things brief, I read on my phone.",
            "English isn't my first language, so please use simple words.",
        ] {
            assert_eq!(statements(said), [said.to_owned()], "{said}");
        }
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
            // The matter at hand, not the person.
            "I have a question about my code.",
            "I use this function in my script and it fails.",
            "I keep getting an error when I run the tests.",
            "I'm looking for a gift for my brother.",
            "I like that idea.",
            "I love it!",
            "Show me when you can!",
            "Use the example you gave earlier.",
            // Events and moods of a day, and things said about others.
            "I went to the market this morning and it was packed.",
            "I gave long answers on the exam.",
            "I'm thinking of adopting a dog with my kids.",
            "It's always great to have fun with friends.",
            "Never saw this coming.",
            "Your support means everything.",
            "We're putting together a talent show for the kids next month.",
            "I'm trying to eat less sugar this week.",
            "I'm learning a lot from this.",
        ] {
            assert!(
                statements(said).is_empty(),
                "{said}: {:?}",
                statements(said)
            );
        }
    }
}

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
        "Write all code examples in Kotlin for me.",
        "Give me answers in Celsius and kilometres.",
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
        "I have two questions about my code.",
        "I have 3 files to merge.",
        "Give me a short summary of this article.",
        "Write a brief reply to this email.",
    ] {
        assert!(
            statements(said).is_empty(),
            "{said}: {:?}",
            statements(said)
        );
    }
}

//! The in-process search index of one scope: an HNSW graph over embeddings (`hnsw_rs`) and a
//! BM25 keyword index, fused by reciprocal rank.
//!
//! One index per scope, so a search never ranks another user's memories — there is no global
//! top-k to filter afterwards. The index holds row numbers; the store maps them to memories.
//! Deleting marks a row dead (HNSW graphs do not shrink); dead rows are skipped and the index
//! is rebuilt from the store when they outnumber the live ones.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use rust_stemmers::{Algorithm, Stemmer};

use super::TurnRole;
use crate::vectors::VectorIndex;

/// BM25 parameters (the usual ones).
const K1: f32 = 1.2;
const B: f32 = 0.75;
/// Reciprocal-rank-fusion constant. Lower than the customary 60, so the first few ranks of
/// each list weigh more (LOCOMO dev, recall@10: 64.0% at 60, 67.5% at 10). With the weights
/// below, evidence reach within the replay's blocks, the replay's recorded searches re-ranked:
/// whole history 80.7%, last 20 messages 65.0%, fresh chats 63.2% at 5; 80.4%, 62.7%, 61.1%
/// at 10 with equal weights and a neighbour share of 0.35.
const RRF_K: f32 = 5.0;
/// Weight of the vector list's reciprocal ranks against the keyword list's 1: the keywords
/// name what a question is about (a name, a place, an activity), and MiniLM's neighbours of a
/// short question are many and alike. The plateau (last 20 messages, 64–65%) spans 0.5–0.85.
const VECTOR_WEIGHT: f32 = 0.7;
/// Share of a candidate's fused score added to the candidates stored just before and after
/// it. Memories stored together come from one conversation, where an answer sits next to its
/// question (LOCOMO dev, recall@10 with a memory per turn: 67.5% without, 71.3% with 0.2;
/// all evidence within a 1,024-token block with a memory per message: 72.3% at 0.2, 73.9% at
/// 0.35; within the replay's blocks, at `RRF_K` 5, 0.5–0.7 alike and 1.0 a point less). Only
/// candidates gain: a neighbour below the similarity floor with no keyword match stays out.
const NEIGHBOUR_SHARE: f32 = 0.7;

/// Weight of a word of the turn a memory answers, against 1 for its own words. An answer
/// rarely repeats the question's words ("What did you take away from Becoming Nicole?" — "It
/// taught me self-acceptance …"); LOCOMO dev, all evidence within a 1,280-token block: 76.2%
/// without, 77.8% at 0.3, 78.1% at 0.5, 77.0% at 1. Only keywords: blending the question's
/// vector into the answer's gained nothing.
const CONTEXT_SHARE: f32 = 0.5;

/// A word in more than this share of a scope's memories is left out of the query recall
/// embeds ([`ScopeIndex::meaning_query`]).
const COMMON_SHARE: f32 = 0.2;
/// Memories a scope needs before any of its words counts as common (in a small one, every
/// word is rare; as for BM25's skip).
const COMMON_MIN_ROWS: usize = 50;
/// A capitalised word of a question that at least this share of a large scope's turns say, all
/// but [`ADDRESS_OTHER_SIDE`] of them by one side, is a name that side calls the other by
/// ([`ScopeIndex::addressed`]). LOCOMO dev: each speaker's name is said in 14–32% of the
/// turns, by the other speaker in all but one of 781; a proper noun that is a topic ("Paris",
/// "Python") is rarely said in 5% of turns, and both sides say it.
const ADDRESS_MIN_SHARE: f32 = 0.05;
/// Share of a name's turns the one it names may say (of themselves) and still be addressed by it.
const ADDRESS_OTHER_SIDE: f32 = 0.1;
/// Factor on the score of a turn by anyone but the side a question names: a
/// question about a person is answered by what they said (LOCOMO dev: 449 of 463 evidence
/// turns of a question naming one speaker are that speaker's), and the turns that say the
/// name are the other's ("Wow, Caroline!"), which the keywords and the neighbours raise.
const ADDRESSER_WEIGHT: f32 = 0.3;
/// Words too common to say anything about a memory.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "did", "do", "does", "for", "from",
    "had", "has", "have", "he", "her", "his", "i", "in", "is", "it", "its", "me", "my", "of", "on",
    "or", "she", "so", "that", "the", "their", "them", "they", "this", "to", "was", "we", "were",
    "what", "when", "where", "which", "who", "why", "will", "with", "you", "your", "how",
];

static STEMMER: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::English));

/// Lower-cased, stemmed words without stopwords ("painted" and "painting" both match
/// "paint": questions and statements rarely use the same form of a word).
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| STEMMER.stem(&w).into_owned())
        .collect()
}

/// A row as [`ScopeIndex::extend`] takes it.
pub struct IndexRow {
    pub text: String,
    /// The turn it answers (see [`ScopeIndex::add_turn`]).
    pub context: Option<String>,
    pub speaker: Option<TurnRole>,
    pub vector: Option<Vec<f32>>,
}

/// One candidate of a search, by row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub row: usize,
    /// Fused rank score (higher is better).
    pub score: f32,
    /// Cosine similarity to the query, when vectors were searched.
    pub similarity: Option<f32>,
    /// The BM25 score of its keywords against the query's, when they matched.
    pub keywords: Option<f32>,
}

/// The index of one scope.
pub struct ScopeIndex {
    vectors: VectorIndex,
    postings: HashMap<String, Vec<(usize, f32)>>,
    lengths: Vec<u32>,
    /// Who said each row, when it is a conversation turn.
    speakers: Vec<Option<TurnRole>>,
    total_length: u64,
    dead: HashSet<usize>,
}

impl Default for ScopeIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl ScopeIndex {
    pub fn new() -> Self {
        Self {
            vectors: VectorIndex::default(),
            postings: HashMap::new(),
            lengths: Vec::new(),
            speakers: Vec::new(),
            total_length: 0,
            dead: HashSet::new(),
        }
    }

    /// Adds a row and returns its number.
    pub fn add(&mut self, text: &str, vector: Option<Vec<f32>>) -> usize {
        self.add_turn(text, None, None, vector)
    }

    /// Adds a row said by `speaker` (a conversation turn), whose keywords include, at a
    /// fraction of their weight, those of `context` (the turn it answers), and returns its
    /// number.
    pub fn add_turn(
        &mut self,
        text: &str,
        context: Option<&str>,
        speaker: Option<TurnRole>,
        vector: Option<Vec<f32>>,
    ) -> usize {
        let row = self.add_words(text, context, speaker);
        if let Some(v) = vector {
            self.vectors.add(row, v);
        }
        row
    }

    /// Adds many rows at once (a scope loaded from its store); vectors go in one batch, so a
    /// 100k-memory scope loads in seconds instead of minutes.
    pub fn extend(&mut self, rows: Vec<IndexRow>) {
        let mut vectors = Vec::new();
        for r in rows {
            let row = self.add_words(&r.text, r.context.as_deref(), r.speaker);
            if let Some(v) = r.vector {
                vectors.push((row, v));
            }
        }
        self.vectors.extend(vectors);
    }

    /// Indexes a row's words and returns its number.
    fn add_words(&mut self, text: &str, context: Option<&str>, speaker: Option<TurnRole>) -> usize {
        let row = self.lengths.len();
        let words = terms(text);
        let mut tf: HashMap<&str, f32> = HashMap::new();
        for w in &words {
            *tf.entry(w.as_str()).or_default() += 1.0;
        }
        let context = context.map(terms).unwrap_or_default();
        for w in &context {
            *tf.entry(w.as_str()).or_default() += CONTEXT_SHARE;
        }
        for (w, n) in tf {
            self.postings
                .entry(w.to_owned())
                .or_default()
                .push((row, n));
        }
        self.lengths.push(words.len() as u32);
        self.speakers.push(speaker);
        self.total_length += words.len() as u64;
        row
    }

    /// The live row most similar to `vector`, with its cosine similarity.
    pub fn nearest(&self, vector: &[f32]) -> Option<(usize, f32)> {
        self.vectors.nearest(vector, 1).into_iter().next()
    }

    /// Marks a row dead.
    pub fn remove(&mut self, row: usize) {
        if row < self.lengths.len() {
            self.dead.insert(row);
            self.vectors.remove(row);
        }
    }

    /// Live rows.
    pub fn len(&self) -> usize {
        self.lengths.len() - self.dead.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether dead rows outnumber live ones (time to rebuild).
    pub fn needs_rebuild(&self) -> bool {
        self.dead.len() > 64 && self.dead.len() > self.len()
    }

    fn bm25(&self, query: &[String], limit: usize) -> Vec<(usize, f32)> {
        let n = self.len().max(1) as f32;
        let avg = (self.total_length as f32 / self.lengths.len().max(1) as f32).max(1.0);
        let mut scores: HashMap<usize, f32> = HashMap::new();
        let unique: HashSet<&String> = query.iter().collect();
        for term in unique {
            let Some(posts) = self.postings.get(term) else {
                continue;
            };
            // Dead rows still count here: an estimate, without a pass over the postings.
            let df = posts.len() as f32;
            // In a large scope, a word in most memories says almost nothing (idf < 0.22) and
            // costs a pass over all of them: skip it. (In a small one every word is rare.)
            if n >= 50.0 && df > 0.8 * n {
                continue;
            }
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(row, tf) in posts {
                if self.dead.contains(&row) {
                    continue;
                }
                let len = self.lengths[row] as f32;
                *scores.entry(row).or_default() +=
                    idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg));
            }
        }
        let mut ranked: Vec<_> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(limit);
        ranked
    }

    /// What of `text` recall should embed: without the words that more than [`COMMON_SHARE`]
    /// of a large scope's memories say (`None` when there are none, or nothing else is left).
    /// Such a word (the name of the one the memories are said to, the project all of them are
    /// about) tells no memory from another by meaning, yet MiniLM weighs a name heavily: the
    /// query's vector lands near every memory that says it rather than the one that answers
    /// ("What activities has Melanie done with her family?": the turns naming Melanie are her
    /// friend's). The keyword side still counts it, at its small idf (left out there too, a
    /// name no longer tells whose turn a match is about). LOCOMO dev through the server:
    /// whole history 80.9% → 81.5–81.7% evidence reach, last 20 messages 66.1% → 67.4%, fresh
    /// chats 64.0% → 65.8%, at the same tokens.
    pub fn meaning_query(&self, text: &str) -> Option<String> {
        let rows = self.len();
        if rows < COMMON_MIN_ROWS {
            return None;
        }
        let common = |t: &String| self.own_rows(t).count() as f32 > COMMON_SHARE * rows as f32;
        let mut out = String::with_capacity(text.len());
        let mut dropped = false;
        let mut word_start = None;
        for (at, c) in text.char_indices().chain([(text.len(), ' ')]) {
            if c.is_alphanumeric() {
                word_start.get_or_insert(at);
                continue;
            }
            if let Some(start) = word_start.take() {
                let word = &text[start..at];
                // A name the other side calls one by (at a sentence's start too: left out of
                // the vector, it costs little) pulls the vector to the turns saying it.
                let ts = terms(word);
                let name = word.chars().next().is_some_and(char::is_uppercase)
                    && ts.iter().any(|t| self.addressee(t).is_some());
                if name || ts.iter().any(common) {
                    dropped = true;
                } else {
                    out.push_str(word);
                }
            }
            if at < text.len() {
                out.push(c);
            }
        }
        (dropped && !terms(&out).is_empty()).then_some(out)
    }

    /// The live rows whose own text holds `term` (a word of the turn a memory answers weighs
    /// less than 1 there).
    fn own_rows<'a>(&'a self, term: &str) -> impl Iterator<Item = usize> + 'a {
        self.postings
            .get(term)
            .into_iter()
            .flatten()
            .filter(|&&(row, tf)| tf >= 1.0 && !self.dead.contains(&row))
            .map(|&(row, _)| row)
    }

    /// Whom `term` names, when at least [`ADDRESS_MIN_SHARE`] of a large scope's turns say it
    /// and nearly all of them are the other side's.
    fn addressee(&self, term: &str) -> Option<TurnRole> {
        let rows = self.len();
        if rows < COMMON_MIN_ROWS {
            return None;
        }
        let (mut by_user, mut by_assistant) = (0.0_f32, 0.0_f32);
        for row in self.own_rows(term) {
            match self.speakers[row] {
                Some(TurnRole::User) => by_user += 1.0,
                Some(TurnRole::Assistant) => by_assistant += 1.0,
                _ => {}
            }
        }
        let said = by_user + by_assistant;
        if said < ADDRESS_MIN_SHARE * rows as f32 {
            None
        } else if by_user <= ADDRESS_OTHER_SIDE * said {
            Some(TurnRole::User)
        } else if by_assistant <= ADDRESS_OTHER_SIDE * said {
            Some(TurnRole::Assistant)
        } else {
            None
        }
    }

    /// Whom a question is about, when it names one side of the conversation by a name the
    /// other calls them by (see [`ADDRESS_MIN_SHARE`]): the name's turns are nearly all one
    /// side's, so it names the other. `None` when it names neither, or both.
    pub fn addressed(&self, text: &str) -> Option<TurnRole> {
        self.names(text).map(|(whom, _)| whom)
    }

    /// [`Self::addressed`], with the terms of the name (which the search leaves out of the
    /// keywords: it tells whose turn, which the speakers say, not what about).
    fn names(&self, text: &str) -> Option<(TurnRole, Vec<String>)> {
        let mut named = None;
        let mut said = Vec::new();
        let mut sentence_start = true;
        for word in text.split_whitespace() {
            let starts =
                std::mem::replace(&mut sentence_start, word.ends_with(['.', '?', '!', ':']));
            // A name is capitalised where a sentence does not start.
            if starts || !word.chars().next().is_some_and(char::is_uppercase) {
                continue;
            }
            for t in terms(word) {
                let Some(whom) = self.addressee(&t) else {
                    continue;
                };
                if named.replace(whom).is_some_and(|before| before != whom) {
                    return None;
                }
                said.push(t);
            }
        }
        named.map(|whom| (whom, said))
    }

    /// The best rows for a query: vector neighbours at or above `floor` similarity and BM25
    /// keyword matches, fused by reciprocal rank. Either side may be absent.
    pub fn search(
        &self,
        text: &str,
        vector: Option<&[f32]>,
        limit: usize,
        floor: f32,
    ) -> Vec<Scored> {
        if limit == 0 || self.is_empty() {
            return Vec::new();
        }
        let pool = (limit * 4).max(20);
        let mut fused: HashMap<usize, Scored> = HashMap::new();
        if let Some(q) = vector {
            let near = self.vectors.nearest(q, pool);
            for (rank, (row, sim)) in near.into_iter().filter(|(_, s)| *s >= floor).enumerate() {
                let e = fused.entry(row).or_insert(Scored {
                    row,
                    score: 0.0,
                    similarity: None,
                    keywords: None,
                });
                e.score += VECTOR_WEIGHT / (RRF_K + rank as f32 + 1.0);
                e.similarity = Some(sim);
            }
        }
        let named = self.names(text);
        let mut words = terms(text);
        if let Some((_, name)) = &named {
            words.retain(|w| !name.contains(w));
        }
        for (rank, (row, bm25)) in self.bm25(&words, pool).into_iter().enumerate() {
            let e = fused.entry(row).or_insert(Scored {
                row,
                score: 0.0,
                similarity: None,
                keywords: None,
            });
            e.score += 1.0 / (RRF_K + rank as f32 + 1.0);
            e.keywords = Some(bm25);
        }
        // Neighbours that are candidates themselves share in each other's score.
        let base: HashMap<usize, f32> = fused.iter().map(|(r, e)| (*r, e.score)).collect();
        for (row, e) in &mut fused {
            let near = [row.checked_sub(1), Some(row + 1)];
            e.score += NEIGHBOUR_SHARE
                * near
                    .into_iter()
                    .flatten()
                    .filter_map(|n| base.get(&n))
                    .sum::<f32>();
        }
        if let Some((whom, _)) = named {
            for (row, e) in &mut fused {
                if self.speakers[*row].is_some_and(|s| s != whom) {
                    e.score *= ADDRESSER_WEIGHT;
                }
            }
        }
        let mut out: Vec<Scored> = fused.into_values().collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
        out.truncate(limit);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn keywords_rank_by_bm25_and_stopwords_do_not_count() {
        let mut idx = ScopeIndex::new();
        idx.add("I like short answers", None);
        idx.add("I am a Python developer who likes Python", None);
        idx.add("The weather is nice", None);
        let hits = idx.search("python please", None, 10, 0.0);
        assert_eq!(hits[0].row, 1);
        assert_eq!(hits.len(), 1);
        assert!(idx.search("the is a", None, 10, 0.0).is_empty());
    }

    #[test]
    fn a_tiny_scope_still_matches_its_only_memory_and_a_large_one_skips_ubiquitous_words() {
        let mut idx = ScopeIndex::new();
        idx.add("peanuts make me ill", None);
        assert_eq!(idx.search("peanuts", None, 5, 0.0).len(), 1);
        for i in 0..99 {
            idx.add(&format!("peanuts note {i}"), None);
        }
        idx.add("a rare word: violin", None);
        // "peanuts" is in 100 of 101 memories: it no longer ranks anything by itself.
        assert!(idx.search("peanuts", None, 5, 0.0).is_empty());
        assert_eq!(idx.search("peanuts violin", None, 5, 0.0)[0].row, 100);
    }

    #[test]
    fn the_meaning_query_leaves_out_what_a_large_share_of_memories_say() {
        let mut idx = ScopeIndex::new();
        for i in 0..49 {
            idx.add(&format!("Thanks, Caroline! Note {i}"), None);
        }
        // A small scope: every word still counts.
        assert_eq!(idx.meaning_query("What does Caroline paint?"), None);
        idx.add("We went camping with the kids", None);
        assert_eq!(
            idx.meaning_query("What does Caroline paint?").as_deref(),
            Some("What does  paint?")
        );
        // Nothing common in it, or nothing but: the query as asked.
        assert_eq!(idx.meaning_query("Where did we go camping?"), None);
        assert_eq!(idx.meaning_query("Caroline?"), None);
        // A word only the answered turns say (context) is no memory's own.
        let mut ctx = ScopeIndex::new();
        for i in 0..60 {
            ctx.add_turn(&format!("answer {i}"), Some("Melanie asks"), None, None);
        }
        assert_eq!(ctx.meaning_query("What did Melanie say?"), None);
    }

    /// 100 turns, the user's and the assistant's in turn, where the assistant calls the user
    /// Melanie in one of its turns out of five, and each side painted something once.
    fn chat_naming_the_user(speakers: bool) -> (ScopeIndex, usize, usize) {
        let mut idx = ScopeIndex::new();
        let who = |role| speakers.then_some(role);
        let (mut by_user, mut by_assistant) = (0, 0);
        for i in 0..50 {
            let said = match i {
                22 => "I painted a sunrise over the lake".to_owned(),
                _ => format!("note {i} about my day"),
            };
            let row = idx.add_turn(&said, None, who(TurnRole::User), None);
            if i == 22 {
                by_user = row;
            }
            let answer = match i {
                30 => "Melanie, I painted a sunset myself".to_owned(),
                _ if i % 5 == 0 => format!("Wow, Melanie! Reply {i}"),
                _ => format!("Reply {i} about your day"),
            };
            let row = idx.add_turn(&answer, None, who(TurnRole::Assistant), None);
            if i == 30 {
                by_assistant = row;
            }
        }
        (idx, by_user, by_assistant)
    }

    #[test]
    fn a_question_naming_one_side_ranks_what_that_side_said() {
        let (idx, by_user, by_assistant) = chat_naming_the_user(true);
        // The assistant says "Melanie" (in 11 of 100 turns), the user never: it names the user.
        assert_eq!(
            idx.addressed("What did Melanie paint?"),
            Some(TurnRole::User)
        );
        // Not a name: lower case, a sentence's first word, a word both sides say often ("day"),
        // one said too rarely to tell ("painted").
        assert_eq!(idx.addressed("what did melanie paint?"), None);
        assert_eq!(idx.addressed("Melanie painted what?"), None);
        assert_eq!(idx.addressed("What about my Day?"), None);
        assert_eq!(idx.addressed("What about Painted things?"), None);
        let hits = idx.search("What did Melanie paint?", None, 5, 0.0);
        assert_eq!(hits[0].row, by_user, "{hits:?}");
        // Nor is the name a keyword: only the two turns that say what was painted match.
        assert_eq!(hits.len(), 2, "{hits:?}");
        // The same turns without who said them: the one that says the name and the word wins.
        let (anonymous, _, _) = chat_naming_the_user(false);
        assert_eq!(anonymous.addressed("What did Melanie paint?"), None);
        let hits = anonymous.search("What did Melanie paint?", None, 5, 0.0);
        assert_eq!(hits[0].row, by_assistant, "{hits:?}");
        // Nor does recall embed the name: its vector would land among the turns saying it.
        assert_eq!(
            idx.meaning_query("What did Melanie paint?").as_deref(),
            Some("What did  paint?")
        );
        assert_eq!(anonymous.meaning_query("What did Melanie paint?"), None);
    }

    #[test]
    fn vectors_and_keywords_fuse_and_dead_rows_vanish() {
        let mut idx = ScopeIndex::new();
        // Rows apart (stored between them: a filler no search finds), so no neighbour shares.
        let a = idx.add("alpha", Some(unit(&[1.0, 0.0, 0.0])));
        idx.add("filler", None);
        let b = idx.add("beta", Some(unit(&[0.0, 1.0, 0.0])));
        idx.add("filler", None);
        let c = idx.add("gamma beta", Some(unit(&[0.7, 0.7, 0.0])));
        let q = unit(&[1.0, 0.1, 0.0]);
        let hits = idx.search("beta", Some(&q), 3, 0.5);
        // `c` is near the query and matches the keyword: first. `b` is below the floor but
        // matches the keyword; `a` is nearest by vector.
        assert_eq!(hits[0].row, c);
        assert!(hits.iter().any(|h| h.row == a && h.similarity.is_some()));
        assert!(hits.iter().any(|h| h.row == b && h.similarity.is_none()));
        idx.remove(c);
        assert!(
            idx.search("beta", Some(&q), 3, 0.5)
                .iter()
                .all(|h| h.row != c)
        );
        assert_eq!(idx.len(), 4);
    }

    #[test]
    fn a_candidate_stored_between_two_others_shares_in_their_scores() {
        // The same three rows, stored one after the other: `b`, the answer between two
        // candidates, rises above `c`, which has only one candidate beside it.
        let mut idx = ScopeIndex::new();
        idx.add("alpha", Some(unit(&[1.0, 0.0, 0.0])));
        let b = idx.add("beta", Some(unit(&[0.0, 1.0, 0.0])));
        idx.add("gamma beta", Some(unit(&[0.7, 0.7, 0.0])));
        let q = unit(&[1.0, 0.1, 0.0]);
        assert_eq!(idx.search("beta", Some(&q), 3, 0.5)[0].row, b);
    }
}

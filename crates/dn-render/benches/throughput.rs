//! Data-path throughput: normalize-free render + tokenize + mask of a generated corpus of 10k multi-turn
//! conversations with SmolLM2's template and tokenizer, on 1 core and on all cores.
//!
//! Corpus (deterministic): 1 to 4 user/assistant exchanges per conversation (uniform); user turns of 5 to
//! 60 words, assistant turns of 10 to 200 words (uniform), words drawn from a fixed 120-word vocabulary with
//! punctuation; a system message in 30% of conversations.
//!
//! Run: `cargo bench -p dn-render --bench throughput` (needs scripts/fetch-test-model.sh first).

use std::time::Instant;

use dn_data::{ChatMessage, Conversation, Role};
use dn_render::{ModelArtifacts, PrepareOptions, prepare};

const WORDS: &str = "the a to of and in is it you that for on was with as have be at one this from by hot word but what \
some we can out other were all there when up use your how said an each she which do their time if will way about many \
then them write would like so these her long make thing see him two has look more day could go come did number sound \
no most people my over know water than call first who may down side been now find any new work part take get place made \
live where after back little only round man year came show every good me give our under name very through just form \
sentence great think say help low line differ turn cause much mean before move right boy old too same tell does set";

/// A small deterministic generator (SplitMix64), so the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, low: usize, high: usize) -> usize {
        low + (self.next() % (high - low + 1) as u64) as usize
    }
}

fn text(rng: &mut Rng, words: &[&str], low: usize, high: usize) -> String {
    let n = rng.range(low, high);
    let mut out = String::new();
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(words[rng.range(0, words.len() - 1)]);
        if rng.range(0, 11) == 0 {
            out.push_str(if rng.range(0, 1) == 0 { "." } else { "," });
        }
    }
    out
}

fn corpus(n: usize) -> Vec<Conversation> {
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut rng = Rng(42);
    (0..n)
        .map(|_| {
            let mut messages = Vec::new();
            if rng.range(0, 9) < 3 {
                messages.push(ChatMessage::new(
                    Role::System,
                    text(&mut rng, &words, 5, 30),
                ));
            }
            for _ in 0..rng.range(1, 4) {
                messages.push(ChatMessage::new(Role::User, text(&mut rng, &words, 5, 60)));
                messages.push(ChatMessage::new(
                    Role::Assistant,
                    text(&mut rng, &words, 10, 200),
                ));
            }
            Conversation {
                messages,
                tools: vec![],
            }
        })
        .collect()
}

fn main() {
    let Some(path) = dn_testkit::test_model() else {
        return;
    };
    let artifacts = ModelArtifacts::load(&path).expect("test model loads");
    let conversations = corpus(10_000);
    let options = PrepareOptions {
        max_sequence_length: 2048,
        system_prompt: "You are a helpful assistant.".into(),
        train_on: dn_render::TrainOn::Assistant,
    };
    // Where one thread's time goes: rendering (template, masks) versus tokenizing.
    let started = Instant::now();
    let rendered: Vec<_> = conversations
        .iter()
        .map(|c| dn_render::render_supervised(&artifacts, c).unwrap())
        .collect();
    let render = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for r in rendered.iter().flatten() {
        dn_render::tokenize(&artifacts, r, 2048).unwrap();
    }
    println!(
        "breakdown, 1 thread: render + spans {render:.2}s, tokenize + mask {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for threads in [1, cores] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let input = conversations.clone();
        let started = Instant::now();
        let prepared = pool.install(|| prepare(&artifacts, input, &options));
        let seconds = started.elapsed().as_secs_f64();
        let s = &prepared.stats;
        println!(
            "{threads} thread(s): {} conversations, {} tokens ({} supervised) in {seconds:.2}s: \
             {:.0} conversations/s, {:.0} tokens/s ({:.0} tokens/s per thread)",
            s.conversations,
            s.tokens,
            s.supervised_tokens,
            s.conversations as f64 / seconds,
            s.tokens as f64 / seconds,
            s.tokens as f64 / seconds / threads as f64
        );
    }
}

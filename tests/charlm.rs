//! The shipped character-level model: greedy decoding in Rust reproduces
//! PyTorch's greedy continuation character for character (expected strings
//! written by tools/train_charlm.py), batches of prompts give the same
//! continuations as single prompts, and sampling is seeded.

mod common;

use lstm_kernels::Isa;
use lstm_kernels::charlm::{CharLm, Sampling};

fn greedy() -> Sampling {
    Sampling {
        temperature: 0.0,
        top_k: None,
        seed: 0,
    }
}

#[test]
fn greedy_matches_pytorch() {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::golden::file("charlm", "greedy.json")).unwrap(),
    )
    .unwrap();
    let model = CharLm::shipped().unwrap();
    for case in golden["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let want = case["greedy"].as_str().unwrap();
        let len = case["length"].as_u64().unwrap() as usize;
        let got = model.generate(&[prompt], len, greedy(), |_, _| {}).unwrap();
        assert_eq!(got[0], want, "prompt {prompt:?}");
    }
    println!("ISA {}", Isa::detect());
}

#[test]
fn batches_equal_single_prompts_and_stream_in_order() {
    let model = CharLm::shipped().unwrap();
    let prompts = [
        "In the beginning",
        "And Jacob said",
        "God",
        "And the LORD said unto Abram",
    ];
    let mut streamed = vec![String::new(); prompts.len()];
    let batch = model
        .generate(&prompts, 40, greedy(), |i, c| streamed[i].push(c))
        .unwrap();
    assert_eq!(batch, streamed);
    for (p, b) in prompts.iter().zip(&batch) {
        let one = model.generate(&[p], 40, greedy(), |_, _| {}).unwrap();
        assert_eq!(&one[0], b, "prompt {p:?} alone vs in a batch");
    }
    let s = Sampling {
        temperature: 0.9,
        top_k: Some(5),
        seed: 42,
    };
    let a = model.generate(&prompts, 60, s, |_, _| {}).unwrap();
    assert_eq!(
        a,
        model.generate(&prompts, 60, s, |_, _| {}).unwrap(),
        "same seed, same text"
    );
    assert_ne!(
        a,
        model
            .generate(&prompts, 60, Sampling { seed: 43, ..s }, |_, _| {})
            .unwrap()
    );
}

#[test]
fn bad_requests_are_errors() {
    let model = CharLm::shipped().unwrap();
    assert!(
        model
            .generate(&["In the €"], 5, greedy(), |_, _| {})
            .unwrap_err()
            .to_string()
            .contains("vocabulary")
    );
    assert!(model.generate(&[""], 5, greedy(), |_, _| {}).is_err());
    assert!(model.generate(&[], 5, greedy(), |_, _| {}).is_err());
    assert!(
        model
            .generate(
                &["In"],
                5,
                Sampling {
                    temperature: -1.0,
                    top_k: None,
                    seed: 0
                },
                |_, _| {}
            )
            .is_err()
    );
    assert!(
        model
            .generate(
                &["In"],
                5,
                Sampling {
                    temperature: 1.0,
                    top_k: Some(0),
                    seed: 0
                },
                |_, _| {}
            )
            .is_err()
    );
}

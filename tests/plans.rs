//! Per-CPU plans (issue 13): every candidate plan gives the same bits as
//! the default plan and lies within the reference bound, on every ISA this
//! CPU has, on 1 and 2 threads; plan files round-trip; corrupt files are
//! errors and foreign ones are not used.

mod common;

use common::{Case, Runs, check_run, config, on_threads, same_bits};
use lstm_kernels::diagnostics::{fused_runs_on_this_thread, split_runs_on_this_thread};
use lstm_kernels::tuning::{PlanEntry, PlanFile, PlanKey, PlanSource};
use lstm_kernels::{Isa, LstmConfig, Partition, Peephole, PlanRules, Tuning};
use proptest::prelude::*;

/// The candidate plans the tests sweep: every knob at its edges and at the
/// values the measured mode tries.
fn candidates() -> Vec<PlanRules> {
    let mut v = Vec::new();
    for kc in [0usize, 1, 7, 16, 32, 128] {
        v.push(PlanRules {
            kc,
            ..PlanRules::default()
        });
    }
    for chunk_rows in [1usize, 5, 6, 7, 16, 64] {
        v.push(PlanRules {
            chunk_rows,
            ..PlanRules::default()
        });
    }
    for hoist in [1usize, 100, 1 << 14, 1 << 18] {
        v.push(PlanRules {
            hoist,
            ..PlanRules::default()
        });
    }
    for prefetch in [1usize, 16, 1000] {
        v.push(PlanRules {
            prefetch,
            ..PlanRules::default()
        });
    }
    v.push(PlanRules {
        ahead: true,
        ..PlanRules::default()
    });
    // Fused one-step tiles: in `step()` calls, and (hoist = 1: one-step
    // blocks) in whole sequences, with K blocks the fused loop ignores.
    for (hoist, kc) in [(1 << 16, 0), (1, 0), (1, 7)] {
        v.push(PlanRules {
            hoist,
            kc,
            fuse: true,
            ..PlanRules::default()
        });
    }
    for partition in [Partition::Rows, Partition::Units] {
        v.push(PlanRules {
            partition,
            ..PlanRules::default()
        });
        v.push(PlanRules {
            kc: 16,
            chunk_rows: 6,
            hoist: 1 << 10,
            partition,
            prefetch: 8,
            ahead: true,
            fuse: true,
        });
    }
    v
}

/// Every candidate, on every ISA and on 1 and 2 threads: within the
/// reference bound and bitwise equal to the default plan, in one call and
/// (plans that fuse one-step blocks) one `step()` call per step, where the
/// fused loop must run.
fn check_every_plan(case: &Case) -> Result<(), String> {
    check_run(case, &case.run_forward(&case.model()))?;
    for isa in Isa::all_available() {
        let base = case.model().with_isa(isa).unwrap();
        let want = case.run_forward(&base.clone().with_plan_rules(PlanRules::default()).unwrap());
        for threads in [1, 2] {
            for rules in candidates() {
                let m = on_threads(&base, threads).with_plan_rules(rules).unwrap();
                let runs = Runs::start(isa);
                let got = case.run_forward(&m);
                if runs.kernel() == 0 {
                    return Err(format!("{isa}: the kernel did not run"));
                }
                let what = format!("{isa}, {threads} threads, plan {rules}");
                check_run(case, &got).map_err(|e| format!("{what}: {e}"))?;
                same_bits(&format!("{what}: y"), &got.0, &want.0)?;
                same_bits(&format!("{what}: c"), &got.1, &want.1)?;
                same_bits(&format!("{what}: m"), &got.2, &want.2)?;
                if rules.fuse {
                    check_fused_steps(case, &m, &want, threads == 1)
                        .map_err(|e| format!("{what}, step by step: {e}"))?;
                }
            }
        }
    }
    Ok(())
}

/// `model` stepped one call per step: the same bits as `want`; and, where
/// the calls run on this thread and the blocked body runs (not a small
/// cell's kernel), the fused loop ran once per step.
fn check_fused_steps(
    case: &Case,
    model: &lstm_kernels::Lstm,
    want: &(Vec<f32>, Vec<f32>, Vec<f32>),
    on_this_thread: bool,
) -> Result<(), String> {
    let before = fused_runs_on_this_thread();
    let got = case.run_steps(model);
    let fused = fused_runs_on_this_thread() - before;
    same_bits("y", &got.0, &want.0)?;
    same_bits("c", &got.1, &want.1)?;
    same_bits("m", &got.2, &want.2)?;
    let blocked = model
        .kernels_for_batch(case.batch)
        .map_err(|e| e.to_string())?
        .iter()
        .all(|k| *k == "generic" || k.starts_with("blocked_"));
    if on_this_thread && blocked && fused < case.steps as u64 {
        return Err(format!(
            "the fused loop ran {fused} times in {} steps",
            case.steps
        ));
    }
    Ok(())
}

#[test]
fn every_plan_on_edge_shapes() {
    // Row counts around the 6-row register block and the 16-lane vector,
    // K around the K blocks, a prime everywhere.
    for (n, h, b) in [
        (1, 1, 1),
        (7, 5, 10),
        (33, 17, 13),
        (16, 16, 6),
        (17, 15, 7),
        (130, 33, 5),
        (40, 129, 12),
        // Panels of ~190 KiB (AVX-512) or ~95 KiB (AVX2): on a 2 MiB L2
        // the fused loop runs them in two groups (5 + 4, 11 + 6).
        (600, 129, 13),
    ] {
        let case = Case::new(config(n, h, None, false), b, 3, (n * h + b) as u64, 1.0);
        check_every_plan(&case).unwrap();
    }
}

/// A model whose gate weights are streamed from memory (over 16 MiB: the
/// heuristic splits its units across threads whatever the batch, and
/// fetches the next `W_h` panel ahead where `W_h` outgrows L2), at 2
/// threads with 3+ row blocks: the same bits as the default plan on one
/// thread, within the reference bound, on every ISA.
#[test]
fn streamed_weights_plans_give_the_same_bits() {
    let case = Case::new(config(1030, 1027, None, false), 19, 2, 7, 1.0);
    check_run(&case, &case.run_forward(&case.model())).unwrap();
    for isa in Isa::all_available() {
        let base = case.model().with_isa(isa).unwrap();
        let want = case.run_forward(&base.clone().with_plan_rules(PlanRules::default()).unwrap());
        let heuristic = on_threads(&base, 2);
        // The heuristic plan (on a CPU with full-rate 512-bit FMAs: units
        // and ahead), and both partitions with ahead whatever the CPU.
        let given = |partition| {
            let rules = PlanRules {
                ahead: true,
                partition,
                fuse: partition == Partition::Units,
                ..PlanRules::default()
            };
            let m = heuristic.clone().with_plan_rules(rules).unwrap();
            assert_eq!(m.plan_for(19).rules, rules, "the given plan runs");
            m
        };
        for m in [
            heuristic.clone(),
            given(Partition::Rows),
            given(Partition::Units),
        ] {
            assert_eq!(m.isa(), isa, "the forced ISA runs");
            let got = case.run_forward(&m);
            let what = format!("{isa}, plan {}", m.plan_for(19));
            same_bits(&format!("{what}: y"), &got.0, &want.0).unwrap();
            same_bits(&format!("{what}: c"), &got.1, &want.1).unwrap();
            // Fused one-step calls, split by units across the threads.
            if m.plan_for(19).rules.fuse {
                let got = case.run_steps(&m);
                same_bits(&format!("{what}, stepped: y"), &got.0, &want.0).unwrap();
                same_bits(&format!("{what}, stepped: c"), &got.1, &want.1).unwrap();
            }
        }
    }
}

#[test]
fn every_plan_on_variants() {
    let cfgs = [
        LstmConfig::new(19, 37)
            .with_peephole(Peephole::Matrix)
            .with_head(11),
        LstmConfig::new(23, 41)
            .with_peephole(Peephole::Diagonal)
            .with_cell_clip(1.5),
        LstmConfig::new(29, 40)
            .with_projection(17)
            .with_proj_clip(0.8),
        LstmConfig::new(9, 35)
            .with_clip(2.0)
            .with_input_forget(true),
    ];
    for (i, cfg) in cfgs.into_iter().enumerate() {
        let case = Case::new(cfg, 9, 4, 100 + i as u64, 4.0);
        check_every_plan(&case).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_plans_give_the_same_bits(
        n in 1usize..=70, h in 1usize..=70, b in 1usize..=20, t in 1usize..=4,
        kc in 0usize..=80, chunk in 1usize..=24, hoist in 1usize..=5000,
        part in 0usize..3, threads in 1usize..=3, seed in any::<u64>(), prefetch in 0usize..40,
        ahead in any::<bool>(), fuse in any::<bool>(),
    ) {
        let case = Case::new(config(n, h, None, false), b, t, seed, 1.0);
        let rules = PlanRules {
            kc,
            chunk_rows: chunk,
            hoist,
            partition: [Partition::Auto, Partition::Rows, Partition::Units][part],
            prefetch,
            ahead,
            fuse,
        };
        let base = case.model();
        let want = case.run_forward(&base.clone().with_plan_rules(PlanRules::default()).unwrap());
        let got = case.run_forward(&on_threads(&base, threads).with_plan_rules(rules).unwrap());
        prop_assert!(check_run(&case, &got).is_ok());
        prop_assert!(same_bits("y", &got.0, &want.0).is_ok(), "plan {}", rules);
        prop_assert!(same_bits("c", &got.1, &want.1).is_ok(), "plan {}", rules);
        if fuse {
            let m = on_threads(&base, threads).with_plan_rules(rules).unwrap();
            let r = check_fused_steps(&case, &m, &want, threads == 1);
            prop_assert!(r.is_ok(), "plan {}: {:?}", rules, r);
        }
    }
}

/// The ISA models run here: the detected one, or the one
/// `LSTM_KERNELS_ISA` forces (plan entries are keyed by it).
fn run_isa() -> Isa {
    let cfg = LstmConfig::new(24, 40);
    let w = lstm_kernels::LstmWeights::random(&cfg, 1).unwrap();
    lstm_kernels::Lstm::new(cfg, w).unwrap().isa()
}

fn entry(cpu: &str, batch: usize, kc: usize) -> PlanEntry {
    PlanEntry {
        key: PlanKey {
            cpu: cpu.into(),
            isa: run_isa(),
            n_in: 24,
            hidden: 40,
            recurrent: 40,
            head: 0,
            peephole: "none".into(),
            batch,
            threads: 1,
        },
        rules: PlanRules {
            kc,
            chunk_rows: 32,
            hoist: 4096,
            partition: Partition::Rows,
            prefetch: 16,
            ahead: kc % 2 == 1,
            fuse: kc.is_multiple_of(4),
        },
    }
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lstm-plans-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn plan_file_round_trips() {
    let mut f = PlanFile::default();
    f.insert(entry("Some CPU \"quoted\"", 64, 128));
    f.insert(entry("Other CPU", 16, 0));
    f.insert(entry("Other CPU", 16, 32)); // replaces the previous one
    assert_eq!(f.entries.len(), 2);
    let parsed = PlanFile::parse(f.to_text().as_bytes()).unwrap();
    // The quote cannot be written inside the quoted name; it becomes a space.
    assert_eq!(parsed.entries[0].key.cpu, "Some CPU  quoted ");
    assert_eq!(parsed.entries[1], f.entries[1]);
    assert_eq!(parsed.entries[0].rules, f.entries[0].rules);
    let p = tmp("round.plans");
    f.save(&p).unwrap();
    assert_eq!(PlanFile::load(&p).unwrap(), parsed);
}

/// Saving a plan file follows no path planted beside it: the old
/// `<out>.tmp` scheme wrote the plans through a symbolic link planted at
/// `<out>.tmp` into its target, and left the destination a link to it.
#[cfg(unix)]
#[test]
fn saving_a_plan_file_follows_no_planted_path() {
    let mut f = PlanFile::default();
    f.insert(entry("Some CPU", 64, 0));
    // A directory of its own: other tests save plan files meanwhile.
    let dir = tmp("planted");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (out, victim) = (dir.join("p.plans"), dir.join("victim"));
    let planted = dir.join("p.plans.tmp");
    std::fs::write(&victim, "untouched").unwrap();
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    f.save(&out).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(
        !std::fs::symlink_metadata(&out)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(PlanFile::load(&out).unwrap(), f);
    // No temporary file is left beside it.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".lstm-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A directory is an error naming it, not a panic.
    let e = f.save(&dir).unwrap_err().to_string();
    assert!(e.contains(&*dir.to_string_lossy()), "{e}");
}

#[test]
fn corrupt_plan_files_are_errors_never_panics() {
    let good = {
        let mut f = PlanFile::default();
        f.insert(entry("X", 8, 64));
        f.to_text()
    };
    // Every truncation parses or fails cleanly.
    for n in 0..good.len() {
        let _ = PlanFile::parse(&good.as_bytes()[..n]);
    }
    let line = good.lines().nth(1).unwrap();
    let header = "lstm-kernels plans v1\n";
    // The good line with one edit.
    let edit = |from: &str, to: &str| format!("{header}{}", line.replace(from, to));
    let bad = [
        ("not a plan file".to_string(), "not a plan file"),
        (edit("kc=64", "kc=x"), "not a number"),
        (edit("kc=64", "kc=99999999"), "kc"),
        (edit("chunk=32", "chunk=0"), "chunk"),
        (edit("hoist=4096", "hoist=0"), "hoist"),
        (format!("{header}{} kc=1", line), "twice"),
        (format!("{header}{} extra=1", line), "unknown field"),
        (edit("partition=rows", "partition=diagonal"), "partition"),
        (edit("isa=", "isa=sse9"), "sse9"),
        (edit(" batch=8", ""), "missing `batch`"),
        (edit("cpu=\"X\"", "cpu=\"X"), "unterminated"),
        (edit("peephole=none", "peephole=full"), "peephole"),
        (format!("{header}garbage"), "line 2"),
        (edit("ahead=0", "ahead=2"), "ahead"),
        (edit("fuse=1", "fuse=yes"), "fuse"),
    ];
    for (text, why) in bad {
        let e = PlanFile::parse(text.as_bytes()).unwrap_err();
        assert!(e.contains(why), "`{text}`: {e} (expected `{why}`)");
    }
    assert!(
        PlanFile::parse(&[0xff, 0xfe])
            .unwrap_err()
            .contains("UTF-8")
    );
    // An empty or blank file (`touch`, `echo >`) holds no plans; a blank
    // line before the header is not a plan file.
    for blank in ["", "\n", " \n\n\t\n"] {
        assert_eq!(
            PlanFile::parse(blank.as_bytes()).unwrap(),
            PlanFile::default()
        );
    }
    assert!(PlanFile::parse(format!("\n{}", good).as_bytes()).is_err());
    // A line written before `ahead` (or `fuse`) existed means 0.
    let old = PlanFile::parse(edit(" ahead=0", "").as_bytes()).unwrap();
    assert!(!old.entries[0].rules.ahead);
    assert_eq!(old.entries[0].rules.kc, 64);
    let old = PlanFile::parse(edit(" fuse=1", "").as_bytes()).unwrap();
    assert!(!old.entries[0].rules.fuse);
    assert_eq!(old.entries[0].rules.kc, 64);
    // A corrupt file is an error through the model's API too, naming it.
    let p = tmp("corrupt.plans");
    std::fs::write(&p, format!("{header}plan nonsense")).unwrap();
    let case = Case::new(LstmConfig::new(24, 40), 4, 2, 1, 1.0);
    let e = case.model().with_plan_file(&p).unwrap_err().to_string();
    assert!(e.contains("corrupt.plans"), "{e}");
    let e = case
        .model()
        .with_plan_file(tmp("missing.plans"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.plans"), "{e}");
    // An oversized file is refused before it is read.
    let big = tmp("big.plans");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(5 << 20).unwrap();
    let e = case.model().with_plan_file(&big).unwrap_err().to_string();
    assert!(e.contains("bytes"), "{e}");
    // A device that says 0 bytes and never ends is not read at all (it
    // filled memory once): an error, not a process filling memory.
    if std::path::Path::new("/dev/zero").exists() {
        let e = case
            .model()
            .with_plan_file("/dev/zero")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/dev/zero") && e.contains("not a regular file"),
            "{e}"
        );
    }
}

#[test]
fn plan_files_apply_to_their_cpu_and_shape_only() {
    let case = Case::new(LstmConfig::new(24, 40), 8, 3, 5, 1.0);
    let model = case.model();
    let me = model.plan_for(8).cpu;
    assert_eq!(model.plan_for(8).source, PlanSource::Heuristic);
    let mut f = PlanFile::default();
    f.insert(entry("Not This CPU", 8, 7));
    let mut other_shape = entry(&me, 8, 9);
    other_shape.key.hidden = 41;
    f.insert(other_shape);
    let p = tmp("foreign.plans");
    f.save(&p).unwrap();
    let m = model.clone().with_plan_file(&p).unwrap();
    assert_eq!(
        m.plan_for(8).source,
        PlanSource::Heuristic,
        "a foreign entry was used"
    );
    // This CPU's entries: the nearest batch (by ratio) with the model's threads.
    f.insert(entry(&me, 8, 48));
    f.insert(entry(&me, 64, 96));
    f.save(&p).unwrap();
    let m = model.clone().with_plan_file(&p).unwrap();
    assert_eq!(m.plan_for(8).rules.kc, 48);
    assert_eq!(m.plan_for(10).rules.kc, 48);
    assert_eq!(m.plan_for(40).rules.kc, 96);
    assert!(matches!(m.plan_for(8).source, PlanSource::File { .. }));
    assert!(
        m.plan().to_string().contains("foreign.plans"),
        "{}",
        m.plan()
    );
    // On 2 threads no entry applies; results are the same bits either way.
    let m2 = m.clone().with_threads(2).unwrap();
    assert_eq!(m2.plan_for(8).source, PlanSource::Heuristic);
    let (a, b) = (case.run_forward(&m), case.run_forward(&model));
    same_bits("y", &a.0, &b.0).unwrap();
    // Back to the heuristic.
    let h = m.with_tuning(Tuning::Heuristic).unwrap();
    assert_eq!(h.plan_for(8).source, PlanSource::Heuristic);
}

#[test]
fn measured_mode_picks_a_timed_candidate() {
    let cfg = LstmConfig::new(48, 64);
    let case = Case::new(cfg, 12, 3, 9, 1.0);
    let model = case.model();
    let report = model.tune(12).unwrap();
    assert!(report.candidates.len() >= 4, "{report:?}");
    // The kept plan is the heuristic one or faster than it.
    let best = report.ns_per_step(&report.chosen).unwrap();
    let heur = report.ns_per_step(&report.heuristic).unwrap();
    assert!(
        report.chosen == report.heuristic || best < heur,
        "{report:?}"
    );
    assert!(
        report.ns_per_step(&report.heuristic).is_some(),
        "the heuristic was not timed"
    );
    // Another plan is only kept after a head-to-head, in calls at least as
    // long as the descent's.
    assert!(
        report.confirm_steps == 0 || report.confirm_steps >= report.steps,
        "{report:?}"
    );
    assert!(
        report.chosen == report.heuristic || report.confirm_steps > 0,
        "{report:?}"
    );
    assert!(
        report.elapsed.as_secs_f64() < 2.0 + 1.0,
        "{:?}",
        report.elapsed
    );
    let m = model.with_tuning(Tuning::Measure { batch: 12 }).unwrap();
    let plan = m.plan_for(12);
    assert_eq!(plan.source, PlanSource::Measured { batch: 12 });
    check_run(&case, &case.run_forward(&m)).unwrap();
    assert!(model_tune_rejects_zero(&case));
}

fn model_tune_rejects_zero(case: &Case) -> bool {
    case.model().tune(0).is_err()
}

#[test]
fn plan_rules_parse_and_check() {
    let r: PlanRules = "kc=64,chunk=16 hoist=1024,partition=units,prefetch=8,ahead=1,fuse=1"
        .parse()
        .unwrap();
    assert_eq!(
        r,
        PlanRules {
            kc: 64,
            chunk_rows: 16,
            hoist: 1024,
            partition: Partition::Units,
            prefetch: 8,
            ahead: true,
            fuse: true,
        }
    );
    assert_eq!(
        "default".parse::<PlanRules>().unwrap(),
        PlanRules::default()
    );
    assert_eq!(
        r.to_string()
            .replace(' ', ",")
            .parse::<PlanRules>()
            .unwrap(),
        r
    );
    for bad in [
        "kc",
        "kc=-1",
        "chunk=0",
        "speed=11",
        "partition=diagonal",
        "prefetch=5000",
        "ahead=2",
        "ahead=yes",
        "fuse=2",
    ] {
        assert!(bad.parse::<PlanRules>().is_err(), "{bad}");
    }
    let case = Case::new(LstmConfig::new(4, 4), 1, 1, 1, 1.0);
    let e = case
        .model()
        .with_plan_rules(PlanRules {
            hoist: 0,
            ..PlanRules::default()
        })
        .unwrap_err();
    assert!(e.to_string().contains("hoist"), "{e}");
}

/// The plan a model is given is the plan that runs, not only the one it
/// reports: results never depend on the plan, so this is seen through what
/// the planner decides. A seed-sized cell runs its batch-in-lanes kernel
/// on chunks of 5+ rows and its gates-in-lanes kernel on smaller ones, so
/// 8 rows in chunks of at most 4 must run the latter, in one chunk the
/// former (`kernels_for_batch` asks the planner). A planner that ignored
/// the given rules passed every other test here.
#[test]
fn the_given_plan_is_the_plan_that_runs() {
    let cfg = LstmConfig::new(7, 5)
        .with_head(3)
        .with_peephole(Peephole::Matrix);
    let model = lstm_kernels::Lstm::new(cfg, lstm_kernels::LstmWeights::random(&cfg, 5).unwrap())
        .unwrap()
        .with_threads(1)
        .unwrap();
    let small = |chunk_rows: usize| {
        let rules = PlanRules {
            chunk_rows,
            ..PlanRules::default()
        };
        let m = model.clone().with_plan_rules(rules).unwrap();
        m.kernels_for_batch(8).unwrap()
    };
    let (whole, quarters) = (small(64), small(4));
    if !model.kernel_name().starts_with("lanes_") {
        // Without the generated small kernels (an `only:` build list)
        // every chunk runs the same generic kernel.
        assert_eq!((whole.len(), quarters.len()), (1, 1));
        return;
    }
    assert!(
        whole.len() == 1 && whole[0].starts_with("batch_"),
        "{whole:?}"
    );
    assert!(
        quarters.iter().all(|k| k.starts_with("lanes_")),
        "{quarters:?}"
    );
}

/// Models that share one pool (clones, a stack's layers) split by hidden
/// units from several threads at once: the calls take the pool's team of
/// helpers in turn (every one of them runs on it), and every call gives
/// the bits of one thread.
#[test]
fn concurrent_splits_on_one_pool_give_the_same_bits() {
    let case = Case::new(config(48, 96, None, false), 3, 6, 21, 1.0);
    let one = case.run_steps(&case.model());
    let shared = on_threads(&case.model(), 2)
        .with_plan_rules("partition=units,fuse=1".parse().unwrap())
        .unwrap();
    std::thread::scope(|s| {
        for _ in 0..3 {
            let (m, case, one) = (shared.clone(), &case, &one);
            s.spawn(move || {
                let before = split_runs_on_this_thread();
                for _ in 0..20 {
                    let got = case.run_steps(&m);
                    same_bits("y", &got.0, &one.0).unwrap();
                    same_bits("c", &got.1, &one.1).unwrap();
                }
                let splits = split_runs_on_this_thread() - before;
                assert_eq!(
                    splits,
                    20 * case.steps as u64,
                    "steps not split by the team"
                );
            });
        }
    });
}

/// One-step calls that do not fuse, on gate weights larger than L2, run in
/// chunks as large as the hoisted block holds one step of (fewer passes
/// over the weights): here 128 rows instead of 64, on every ISA. Calls of
/// more steps keep 64-row chunks, and every plan gives the same bits.
#[test]
fn one_step_calls_on_large_weights_run_in_larger_chunks() {
    // 8 MiB of gate weights: beyond any L2, short of streamed (16 MiB).
    let cfg = LstmConfig::new(512, 512);
    let case = Case::new(cfg, 256, 2, 17, 1.0);
    let grown: PlanRules = "kc=0,chunk=64,hoist=262144,fuse=0".parse().unwrap();
    // 16,384 floats hold 8 rows of one step: the chunks stay at 64 rows.
    let plain: PlanRules = "kc=0,chunk=64,hoist=16384,fuse=0".parse().unwrap();
    let beyond_l2 = 8 << 20 > lstm_kernels::tuning::CpuFacts::get().l2_bytes;
    for isa in Isa::all_available() {
        let base = case.model().with_isa(isa).unwrap();
        let want = case.run_steps(&base.clone().with_plan_rules(plain).unwrap());
        let m = base.with_plan_rules(grown).unwrap();
        let runs = Runs::start(isa);
        let got = case.run_steps(&m);
        let one_step_chunks = runs.kernel_on_this_thread();
        same_bits(&format!("{isa} y"), &got.0, &want.0).unwrap();
        same_bits(&format!("{isa} c"), &got.1, &want.1).unwrap();
        same_bits(&format!("{isa} m"), &got.2, &want.2).unwrap();
        let runs = Runs::start(isa);
        let whole = case.run_forward(&m);
        let two_step_chunks = runs.kernel_on_this_thread();
        same_bits(&format!("{isa} forward y"), &whole.0, &want.0).unwrap();
        // 2 one-step calls of 2 chunks; 1 two-step call of 4 chunks.
        if beyond_l2 {
            assert_eq!(
                (one_step_chunks, two_step_chunks),
                (2 * 2, 4),
                "{isa}: chunk runs"
            );
        }
    }
}

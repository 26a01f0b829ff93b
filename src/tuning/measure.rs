//! The measured mode: times candidate plans on the model's real shape and
//! keeps the fastest. Candidates vary one knob at a time from the
//! heuristic plan (coordinate descent, two passes), each timed in
//! interleaved rounds (median), within a time budget; the pick then has to
//! beat the heuristic plan again, head to head, in calls about three times
//! longer, to replace it.

use std::time::{Duration, Instant};

use super::{Partition, PlanRules};
use crate::error::{Error, Result};
use crate::model::Lstm;

/// The most a measurement's descent spends (the limit is 2 s per
/// shape, final head-to-head included).
pub const TUNE_BUDGET: Duration = Duration::from_millis(1500);

/// The head-to-head runs longer calls only if they end within this.
const CONFIRM_LIMIT: Duration = Duration::from_millis(1950);

/// What [`Lstm::tune`] found.
#[derive(Clone, Debug)]
pub struct TuneReport {
    /// The heuristic plan it started from.
    pub heuristic: PlanRules,
    /// The plan kept: the fastest candidate if it beat the heuristic plan
    /// in a final head-to-head (in 4 of 5 paired rounds, and by at least
    /// 2% in the median one), else the heuristic plan.
    pub chosen: PlanRules,
    /// Every candidate timed, with its median nanoseconds per step.
    pub candidates: Vec<(PlanRules, f64)>,
    /// Steps per timed call of the descent.
    pub steps: usize,
    /// Steps per call of the final head-to-head (longer calls, closer to
    /// what a service runs: a plan faster in one-step calls can be slower
    /// over many steps, whose input GEMM is hoisted in blocks); 0 if there
    /// was none (the descent's pick was the heuristic plan, or no time was
    /// left).
    pub confirm_steps: usize,
    /// Time spent.
    pub elapsed: Duration,
}

impl TuneReport {
    /// The median ns per step of `rules`, if it was timed.
    pub fn ns_per_step(&self, rules: &PlanRules) -> Option<f64> {
        self.candidates
            .iter()
            .find(|(r, _)| r == rules)
            .map(|(_, t)| *t)
    }
}

/// The values tried for each knob (those that make no difference for this
/// shape, or for calls of `steps` steps, are dropped).
fn knob_values(
    model: &Lstm,
    batch: usize,
    steps: usize,
    base: &PlanRules,
    knob: usize,
) -> Vec<PlanRules> {
    let cfg = model.config();
    let k = cfg.n_input.max(cfg.n_recurrent());
    let mut out = Vec::new();
    match knob {
        0 => {
            for kc in [0usize, 48, 64, 96, 128, 192, 256] {
                if kc < k {
                    out.push(PlanRules { kc, ..*base });
                }
            }
        }
        1 => {
            // Chunks of the whole batch or more are one candidate (the
            // base plan's own, if it is one).
            let mut seen_whole = base.chunk_rows >= batch;
            for c in [16usize, 32, 48, 64, 96, 128, 256] {
                if c >= batch {
                    if seen_whole {
                        continue;
                    }
                    seen_whole = true;
                }
                out.push(PlanRules {
                    chunk_rows: c,
                    ..*base
                });
            }
        }
        2 => {
            for h in [1usize << 14, 1 << 15, 1 << 16, 1 << 17, 1 << 18] {
                out.push(PlanRules { hoist: h, ..*base });
            }
        }
        3 => {
            for prefetch in [0usize, 8, 16, 32] {
                out.push(PlanRules { prefetch, ..*base });
            }
        }
        4 => {
            // The AVX2 microkernel does its own prefetching.
            if model.isa() != crate::Isa::Avx2 {
                for ahead in [false, true] {
                    out.push(PlanRules { ahead, ..*base });
                }
            }
        }
        5 => {
            // Only one-step calls are timed with and without it: longer
            // calls fuse only where their hoisted block is one step (the
            // heuristic's hoist of half of L2 makes that rare, H ≥ 1024 at
            // 64-row chunks, where it measured within noise).
            if steps == 1 {
                for fuse in [false, true] {
                    out.push(PlanRules { fuse, ..*base });
                }
            }
        }
        _ => {
            if model.threads() > 1 {
                for p in [Partition::Auto, Partition::Rows, Partition::Units] {
                    out.push(PlanRules {
                        partition: p,
                        ..*base
                    });
                }
            }
        }
    }
    if !out.contains(base) {
        out.push(*base);
    }
    out
}

/// Times candidates for `batch` rows on the model's threads (see the
/// module docs).
pub(crate) fn tune(model: &Lstm, batch: usize, start: PlanRules) -> Result<TuneReport> {
    if batch == 0 {
        return Err(Error::Invalid("tune: batch must be at least 1".into()));
    }
    let t_start = Instant::now();
    let cfg = model.config();
    // Steps per call: about 8 ms of work at ~100 GFLOP/s per thread.
    let flops = batch as f64 * 8.0 * (cfg.n_input + cfg.n_recurrent()) as f64 * cfg.n_hidden as f64;
    let per_call = |secs: f64| ((secs * 1e11 * model.threads() as f64) / flops).clamp(1.0, 256.0);
    let steps = per_call(8e-3) as usize;
    // The head-to-head: ~25 ms calls, and at least 4 steps.
    let long_steps = (per_call(25e-3) as usize).max(4).max(steps);
    let mut state = model.new_state(batch)?;
    let mut rng = crate::rng::SplitMix64::new(0x7475_6e65);
    let mut xs = crate::error::try_zeros(long_steps * batch * cfg.n_input, "tune inputs")?;
    rng.fill_uniform(&mut xs, -1.0, 1.0);
    let mut out = crate::error::try_zeros(long_steps * batch * cfg.n_output(), "tune output")?;
    let (n_in, n_out) = (batch * cfg.n_input, batch * cfg.n_output());
    let mut time_n = |rules: &PlanRules, steps: usize| -> Result<f64> {
        state.reset();
        let t = Instant::now();
        model.forward_with_rules(
            &mut state,
            &xs[..steps * n_in],
            &mut out[..steps * n_out],
            rules,
        )?;
        Ok(t.elapsed().as_secs_f64() * 1e9 / steps as f64)
    };
    // Warm up (packing pages, the pool's threads, the scratch).
    time_n(&start, steps)?;
    time_n(&start, steps)?;
    let mut timed: Vec<(PlanRules, Vec<f64>)> = Vec::new();
    let mut best = start;
    'passes: for _pass in 0..2 {
        for knob in 0..7 {
            let cands = knob_values(model, batch, steps, &best, knob);
            if cands.len() < 2 {
                continue;
            }
            for _round in 0..3 {
                for c in &cands {
                    let ns = time_n(c, steps)?;
                    match timed.iter_mut().find(|(r, _)| r == c) {
                        Some((_, v)) => v.push(ns),
                        None => timed.push((*c, vec![ns])),
                    }
                    // Checked after every call: one call of a huge batch
                    // can take a good part of the budget.
                    if t_start.elapsed() > TUNE_BUDGET {
                        break 'passes;
                    }
                }
            }
            best = *cands
                .iter()
                .min_by(|a, b| median_of(&timed, a).total_cmp(&median_of(&timed, b)))
                .unwrap_or(&best);
        }
    }
    // Confirm: the descent's pick replaces the heuristic plan only if it
    // is still faster, by at least 2%, over five more interleaved rounds
    // of the two in longer calls (single medians of three short calls on
    // a shared machine are noisy, a plan can win one-step calls and lose
    // long ones, and a plan slower than the heuristic's must not be kept).
    let pick = timed
        .iter()
        .min_by(|a, b| median(&a.1).total_cmp(&median(&b.1)))
        .map_or(start, |t| t.0);
    let mut chosen = start;
    // (Out of time — a model whose single step takes a good part of the
    // budget — the heuristic plan stays.)
    let mut confirm_steps = 0;
    if pick != start && t_start.elapsed() < TUNE_BUDGET + TUNE_BUDGET / 8 {
        // A long call of each first (warm-up, and the cost of the rest):
        // the long calls only if ten more fit within the 2 s, else calls
        // as long as the descent's.
        // A pick that fuses where the heuristic does not (or the other way
        // round) differs only in one-step calls (longer ones hoist): it is
        // confirmed in calls as long as the descent's, which are one step.
        let long_steps = if pick.fuse != start.fuse {
            steps
        } else {
            long_steps
        };
        let warm = Instant::now();
        time_n(&start, long_steps)?;
        time_n(&pick, long_steps)?;
        let per_pair = warm.elapsed();
        confirm_steps = if t_start.elapsed() + per_pair * 5 > CONFIRM_LIMIT {
            steps
        } else {
            long_steps
        };
        // Paired rounds, the order alternating: the pick must win at
        // least 4 of the 5 pairs and by at least 2% in the median pair
        // (two medians of independent calls let a noise spike on the
        // heuristic plan's side pass a plan no faster than it).
        let mut ratios = Vec::with_capacity(5);
        for round in 0..5 {
            let (a, b) = if round % 2 == 0 {
                let a = time_n(&start, confirm_steps)?;
                (a, time_n(&pick, confirm_steps)?)
            } else {
                let b = time_n(&pick, confirm_steps)?;
                (time_n(&start, confirm_steps)?, b)
            };
            ratios.push(b / a);
        }
        if confirmed(&ratios) {
            chosen = pick;
        }
    }
    let candidates: Vec<(PlanRules, f64)> = timed.iter().map(|(r, v)| (*r, median(v))).collect();
    Ok(TuneReport {
        heuristic: start,
        chosen,
        candidates,
        steps,
        confirm_steps,
        elapsed: t_start.elapsed(),
    })
}

/// Whether a head-to-head's pick/heuristic time ratios, one per round,
/// show the pick faster: in at least all but one round, and by at least
/// 2% in the median round.
fn confirmed(ratios: &[f64]) -> bool {
    let wins = ratios.iter().filter(|&&r| r < 1.0).count();
    !ratios.is_empty() && wins + 1 >= ratios.len() && median(ratios) < 0.98
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::INFINITY)
}

fn median_of(timed: &[(PlanRules, Vec<f64>)], r: &PlanRules) -> f64 {
    timed
        .iter()
        .find(|(x, _)| x == r)
        .map_or(f64::INFINITY, |(_, v)| median(v))
}

#[cfg(test)]
mod tests {
    use super::{PlanRules, confirmed, knob_values};
    use crate::{Lstm, LstmConfig, LstmWeights};

    /// Chunks of the whole batch or more behave alike: one candidate, the
    /// base plan's own if its chunk is one (two alike plans timed against
    /// each other can only pick noise).
    #[test]
    fn whole_batch_chunks_are_one_candidate() {
        let cfg = LstmConfig::new(8, 8);
        let model = Lstm::new(cfg, LstmWeights::random(&cfg, 1).unwrap()).unwrap();
        let chunks = |batch, base: usize| -> Vec<usize> {
            let base = PlanRules {
                chunk_rows: base,
                ..PlanRules::default()
            };
            knob_values(&model, batch, 1, &base, 1)
                .iter()
                .map(|r| r.chunk_rows)
                .collect()
        };
        assert_eq!(chunks(1, 64), [64]);
        assert_eq!(chunks(40, 64), [16, 32, 64]);
        assert_eq!(chunks(40, 16), [16, 32, 48]);
        assert_eq!(chunks(300, 64), [16, 32, 48, 64, 96, 128, 256]);
    }

    /// The head-to-head's rule: 4 of 5 pairs won, 2% in the median pair.
    #[test]
    fn a_pick_must_win_most_pairs_by_two_percent() {
        assert!(confirmed(&[0.95; 5]));
        assert!(confirmed(&[0.95, 0.97, 1.01, 0.96, 0.9]), "one pair lost");
        assert!(!confirmed(&[0.9, 0.9, 1.05, 0.9, 1.01]), "two pairs lost");
        assert!(!confirmed(&[0.99; 5]), "1% is noise");
        assert!(
            !confirmed(&[0.5, 0.5, 0.985, 0.99, 0.99]),
            "median pair 1.5%"
        );
        assert!(!confirmed(&[]));
    }
}

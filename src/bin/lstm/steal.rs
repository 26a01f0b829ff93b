//! CPU steal over a measurement: the share of the machine's CPU time that
//! the hypervisor gave to other guests (Linux `/proc/stat`, the `steal`
//! column of the `cpu` line). On a shared VM a run with a few % of steal
//! is disturbed; `lstm bench` reports it beside its figures so that such
//! runs can be told apart. `None` where `/proc/stat` cannot be read.

/// The aggregate `cpu` line's counters (clock ticks, all CPUs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    steal: u64,
    total: u64,
}

/// Parses the `cpu` line of `/proc/stat`'s text: `user nice system idle
/// iowait irq softirq steal [guest guest_nice]`; the total is the first
/// eight (guest time is already counted in user and nice).
pub fn parse(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 8 {
        return None;
    }
    Some(CpuTimes {
        steal: v[7],
        total: v.iter().fold(0u64, |a, &b| a.saturating_add(b)),
    })
}

/// The counters now, if this system has them.
pub fn now() -> Option<CpuTimes> {
    parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The steal share between two readings (0 to 1); `None` if either is
/// missing or no time passed.
pub fn share(before: Option<CpuTimes>, after: Option<CpuTimes>) -> Option<f64> {
    let (b, a) = (before?, after?);
    let total = a.total.checked_sub(b.total)?;
    let steal = a.steal.checked_sub(b.steal)?;
    (total > 0).then(|| (steal as f64 / total as f64).min(1.0))
}

/// For the text output: `"steal 1.2%"` or `"steal unknown"`.
pub fn text(share: Option<f64>) -> String {
    match share {
        Some(s) => format!("steal {:.1}%", 100.0 * s),
        None => "steal unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::{CpuTimes, parse, share};

    #[test]
    fn the_cpu_line_is_read_and_the_share_is_the_steal_over_the_total() {
        let a = parse("cpu  100 0 50 800 10 0 5 35 7 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                steal: 35,
                total: 1000
            }
        );
        let b = parse("cpu  200 0 60 1500 10 0 5 225 9 0\n").unwrap();
        // 190 of the 1,000 ticks between the two readings were stolen.
        assert_eq!(share(Some(a), Some(b)), Some(0.19));
        assert_eq!(share(Some(a), Some(a)), None);
        assert_eq!(share(Some(b), Some(a)), None);
        assert_eq!(share(None, Some(b)), None);
        // Old kernels' lines without a steal column, and garbage.
        assert_eq!(parse("cpu  1 2 3 4\n"), None);
        assert_eq!(parse("cpu  1 2 3 4 5 6 7 x\n"), None);
        assert_eq!(parse("intr 5\n"), None);
    }
}

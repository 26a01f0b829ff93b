//! Facts about the CPU the heuristic plan is chosen from, read once per
//! process: `/proc/cpuinfo` and the sysfs cache directory on Linux
//! (defaults elsewhere), and a short FMA probe for whether 512-bit FMAs
//! issue at full rate.

use std::sync::OnceLock;

use crate::engine::{Isa, fma_rate_probe};

/// What the heuristic plan needs to know about this CPU.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuFacts {
    /// `GenuineIntel`, `AuthenticAMD`, … (empty if unknown).
    pub vendor: String,
    /// CPU family (0 if unknown).
    pub family: u32,
    /// CPU model number (0 if unknown).
    pub model: u32,
    /// The model name (`Intel(R) Xeon(R) Processor`; `unknown CPU` if
    /// the system does not say). Plan files are keyed by it.
    pub model_name: String,
    /// Level-1 data cache per core, bytes (32 KiB if unknown).
    pub l1d_bytes: usize,
    /// Level-2 cache per core, bytes (1 MiB if unknown).
    pub l2_bytes: usize,
    /// Whether 512-bit FMAs issue at full rate: the AVX-512 FMA probe
    /// reaches at least 1.5× the AVX2 one (false without AVX-512).
    pub full_rate_512: bool,
    /// The probe's AVX-512 / AVX2 throughput ratio (0 without AVX-512).
    pub fma_512_ratio: f64,
}

impl CpuFacts {
    /// This CPU's facts (read and probed once per process, about 2 ms).
    pub fn get() -> &'static CpuFacts {
        static FACTS: OnceLock<CpuFacts> = OnceLock::new();
        FACTS.get_or_init(CpuFacts::read)
    }

    fn read() -> CpuFacts {
        // Miri's isolation aborts on opening a file (and would take ages
        // over the probe): an unknown CPU, whose plan is the default one.
        if cfg!(miri) {
            return CpuFacts {
                vendor: String::new(),
                family: 0,
                model: 0,
                model_name: "unknown CPU".into(),
                l1d_bytes: 32 << 10,
                l2_bytes: 1 << 20,
                full_rate_512: false,
                fma_512_ratio: 0.0,
            };
        }
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| -> Option<String> {
            info.lines()
                .take_while(|l| !l.trim().is_empty())
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == name).then(|| v.trim().to_string())
                })
        };
        let num = |name: &str| field(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        let ratio = if Isa::Avx512.available() && Isa::Avx2.available() {
            fma_rate_probe()
        } else {
            0.0
        };
        CpuFacts {
            vendor: field("vendor_id").unwrap_or_default(),
            family: num("cpu family"),
            model: num("model"),
            model_name: field("model name")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unknown CPU".into()),
            l1d_bytes: cache_bytes(1, "Data").unwrap_or(32 << 10),
            l2_bytes: cache_bytes(2, "Unified").unwrap_or(1 << 20),
            full_rate_512: ratio >= 1.5,
            fma_512_ratio: ratio,
        }
    }
}

/// The size of cpu0's cache of `level` and `kind` from sysfs.
fn cache_bytes(level: u32, kind: &str) -> Option<usize> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    for e in dir.flatten() {
        let p = e.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).ok();
        let (Some(lv), Some(ty)) = (read("level"), read("type")) else {
            continue; // not a cache directory (`uevent`)
        };
        if lv.trim().parse::<u32>().ok() != Some(level) || ty.trim() != kind {
            continue;
        }
        return parse_size(read("size")?.trim());
    }
    None
}

/// `48K`, `2048K`, `2M`, `512` → bytes.
fn parse_size(s: &str) -> Option<usize> {
    let (n, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    n.trim().parse::<usize>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("48K"), Some(48 << 10));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("xK"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn facts_are_sane() {
        let f = CpuFacts::get();
        assert!(f.l1d_bytes >= 4 << 10 && f.l2_bytes >= f.l1d_bytes, "{f:?}");
        assert!(!f.model_name.is_empty());
        assert_eq!(f.full_rate_512, f.fma_512_ratio >= 1.5);
    }
}

//! Plan files: measured plans keyed by CPU model, ISA, model shape, batch
//! and threads, one per line, so a service tunes once per machine type.
//!
//! ```text
//! lstm-kernels plans v1
//! # comments and blank lines are ignored
//! plan cpu="Intel(R) Xeon(R) Processor" isa=avx512 n_in=256 hidden=256 recurrent=256 head=0 peephole=none batch=64 threads=1 kc=128 chunk=64 hoist=65536 partition=auto prefetch=16
//! ```
//!
//! Reading never trusts the file: it is at most [`MAX_PLAN_FILE_BYTES`],
//! every field is parsed and range-checked, and an error names the line.
//! Entries for another CPU or shape are simply not used; since a plan
//! never changes results, a wrong entry can only cost speed.

use std::path::Path;

use super::{Partition, PlanRules};
use crate::engine::Isa;
use crate::error::{Error, Result};

/// The first line of every plan file.
pub const PLAN_FILE_HEADER: &str = "lstm-kernels plans v1";

/// Largest plan file read (4 MiB, tens of thousands of entries).
pub const MAX_PLAN_FILE_BYTES: u64 = 4 << 20;

/// What a plan was measured for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlanKey {
    /// The CPU's model name ([`super::CpuFacts::model_name`]).
    pub cpu: String,
    /// The instruction set the kernels ran with.
    pub isa: Isa,
    /// Model shape: inputs, hidden units, recurrent size (the projection
    /// or H), head size (0: none) and peephole kind.
    pub n_in: usize,
    /// Hidden units.
    pub hidden: usize,
    /// Recurrent size (the projection's, or `hidden`).
    pub recurrent: usize,
    /// Head size, 0 for none.
    pub head: usize,
    /// `none`, `diagonal` or `matrix`.
    pub peephole: String,
    /// Rows per call it was timed at.
    pub batch: usize,
    /// Threads it was timed with.
    pub threads: usize,
}

/// One line of a plan file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanEntry {
    /// What it was measured for.
    pub key: PlanKey,
    /// The fastest plan found.
    pub rules: PlanRules,
}

/// A set of plan entries (at most one per key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanFile {
    /// The entries, in file order.
    pub entries: Vec<PlanEntry>,
}

impl PlanFile {
    /// Reads and parses `path` (see the module docs); an error names the
    /// file and what is wrong.
    pub fn load(path: impl AsRef<Path>) -> Result<PlanFile> {
        let path = path.as_ref();
        let io = |source: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let format = |reason: String| Error::Format {
            path: path.to_path_buf(),
            format: "lstm-kernels plans",
            reason,
        };
        // Only a regular file: a FIFO or a device (`/dev/stdout` on a
        // pipe this process writes, `/dev/stdin`) could block the open or
        // the read forever. The check is made on what was opened, too.
        let not_regular = || {
            format("not a regular file (a plan file is text written by `lstm tune --out`)".into())
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(not_regular());
        }
        // Non-blocking where the flag is known (Linux): a path swapped for
        // a FIFO after the check above cannot block the open.
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, 0o4000); // O_NONBLOCK
        let file = opts.open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(not_regular());
        }
        let len = meta.len();
        if len > MAX_PLAN_FILE_BYTES {
            return Err(format(format!(
                "{len} bytes, more than the {MAX_PLAN_FILE_BYTES} a plan file may have"
            )));
        }
        // A file may grow after the check: read one byte more than a plan
        // file may have, no further.
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, MAX_PLAN_FILE_BYTES + 1),
            &mut bytes,
        )
        .map_err(io)?;
        PlanFile::parse(&bytes).map_err(format)
    }

    /// Parses plan-file bytes (see the module docs). Empty text (or only
    /// blank lines: a file made by `touch` or `echo >`) is a plan file
    /// with no entries.
    pub fn parse(bytes: &[u8]) -> std::result::Result<PlanFile, String> {
        if bytes.len() as u64 > MAX_PLAN_FILE_BYTES {
            return Err(format!("more than {MAX_PLAN_FILE_BYTES} bytes"));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text ({e})"))?;
        if text.trim().is_empty() {
            return Ok(PlanFile::default());
        }
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, l)) if l.trim() == PLAN_FILE_HEADER => {}
            _ => {
                return Err(format!(
                    "not a plan file (the first line is not `{PLAN_FILE_HEADER}`)"
                ));
            }
        }
        let mut file = PlanFile::default();
        for (i, line) in lines {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let e = parse_entry(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            file.insert(e);
        }
        Ok(file)
    }

    /// Adds `entry`, replacing one with the same key.
    pub fn insert(&mut self, entry: PlanEntry) {
        match self.entries.iter_mut().find(|e| e.key == entry.key) {
            Some(e) => *e = entry,
            None => self.entries.push(entry),
        }
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut s = format!("{PLAN_FILE_HEADER}\n");
        for e in &self.entries {
            s += &format_entry(e);
            s.push('\n');
        }
        s
    }

    /// Writes the file atomically, as `lstm run` writes its outputs: to a
    /// temporary file created afresh (`O_EXCL`, an unpredictable name)
    /// beside the destination, then renamed into place, so a reader never
    /// sees half a file and no path planted beside it is followed (see
    /// `io::Staged` for links, devices and stdout).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = self.to_text();
        crate::staged::write_atomic(path, |w| {
            w.write_all(text.as_bytes()).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })
        })
    }
}

fn format_entry(e: &PlanEntry) -> String {
    let k = &e.key;
    let r = &e.rules;
    format!(
        "plan cpu=\"{}\" isa={} n_in={} hidden={} recurrent={} head={} peephole={} batch={} threads={} kc={} chunk={} hoist={} partition={} prefetch={} ahead={} fuse={}",
        k.cpu.replace(['"', '\n', '\r'], " "),
        k.isa,
        k.n_in,
        k.hidden,
        k.recurrent,
        k.head,
        k.peephole,
        k.batch,
        k.threads,
        r.kc,
        r.chunk_rows,
        r.hoist,
        r.partition.name(),
        r.prefetch,
        u8::from(r.ahead),
        u8::from(r.fuse)
    )
}

/// `key=value` pairs of one `plan` line (the cpu's value quoted).
fn parse_entry(line: &str) -> std::result::Result<PlanEntry, String> {
    let rest = line
        .strip_prefix("plan ")
        .ok_or("expected a line starting with `plan `")?;
    let (cpu, rest) = {
        let r = rest
            .trim_start()
            .strip_prefix("cpu=\"")
            .ok_or("expected cpu=\"…\" first")?;
        let end = r.find('"').ok_or("unterminated cpu name")?;
        (r[..end].to_string(), &r[end + 1..])
    };
    let mut fields: Vec<(&str, &str)> = Vec::new();
    for tok in rest.split_whitespace() {
        let (k, v) = tok
            .split_once('=')
            .ok_or_else(|| format!("`{tok}` is not key=value"))?;
        if fields.iter().any(|(f, _)| *f == k) {
            return Err(format!("`{k}` given twice"));
        }
        fields.push((k, v));
    }
    let get = |k: &str| {
        fields
            .iter()
            .find(|(f, _)| *f == k)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("missing `{k}`"))
    };
    let num = |k: &str, max: usize| -> std::result::Result<usize, String> {
        let v = get(k)?;
        let n: usize = v
            .parse()
            .map_err(|_| format!("`{k}={v}` is not a number"))?;
        if n > max {
            return Err(format!("`{k}={v}` is larger than {max}"));
        }
        Ok(n)
    };
    // A 0/1 knob, optional: files written before it existed mean 0.
    let flag = |k: &str| match fields.iter().find(|(f, _)| *f == k).map(|(_, v)| *v) {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(v) => Err(format!("`{k}={v}` is not 0 or 1")),
    };
    const DIM: usize = crate::MAX_TENSOR_ELEMENTS;
    let peephole = get("peephole")?;
    if !["none", "diagonal", "matrix"].contains(&peephole) {
        return Err(format!("unknown peephole `{peephole}`"));
    }
    let key = PlanKey {
        cpu,
        isa: get("isa")?.parse::<Isa>()?,
        n_in: num("n_in", DIM)?,
        hidden: num("hidden", DIM)?,
        recurrent: num("recurrent", DIM)?,
        head: num("head", DIM)?,
        peephole: peephole.to_string(),
        batch: num("batch", DIM)?,
        threads: num("threads", 1 << 16)?,
    };
    let rules = PlanRules {
        kc: num("kc", usize::MAX)?,
        chunk_rows: num("chunk", usize::MAX)?,
        hoist: num("hoist", usize::MAX)?,
        partition: get("partition")?
            .parse::<Partition>()
            .map_err(|e| e.to_string())?,
        prefetch: num("prefetch", usize::MAX)?,
        ahead: flag("ahead")?,
        fuse: flag("fuse")?,
    };
    rules.check().map_err(|e| e.to_string())?;
    let known = [
        "isa",
        "n_in",
        "hidden",
        "recurrent",
        "head",
        "peephole",
        "batch",
        "threads",
        "kc",
        "chunk",
        "hoist",
        "partition",
        "prefetch",
        "ahead",
        "fuse",
    ];
    if let Some((k, _)) = fields.iter().find(|(k, _)| !known.contains(k)) {
        return Err(format!("unknown field `{k}`"));
    }
    Ok(PlanEntry { key, rules })
}

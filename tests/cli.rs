//! The `lstm` binary: every test that runs it is here (this file needs
//! `required-features = ["cli"]`; no other test file runs the binary).
//!
//! - `lstm run` on the golden data of every format gives the numbers that
//!   golden.rs, frameworks.rs and sequences.rs check through the library;
//! - `lstm bench --json` and the forced ISA; `lstm codegen`;
//! - error paths: a one-line error, a nonzero exit and no partial output;
//!   a closed stdout.

#[path = "common/cli.rs"]
mod cli;
mod common;

use std::path::Path;
use std::process::Command;

use cli::{lstm, run, run_err, run_ok, stderr};
use common::generated_kernels;
use common::golden::{self, NUMPY_CASES, assert_close_to_numpy, numpy_expected};
use lstm_kernels::{Isa, io};

/// The largest |a - b| over two arrays of the same length; infinite if
/// either holds a NaN where the other differs (`f32::max` drops a NaN, so
/// an all-NaN output compared as 0 apart) or the lengths differ.
/// The CLI's numbers are the library's, bit for bit.
fn assert_same_bits(what: &str, got: &[f32], want: &[f32]) {
    if let Err(e) = common::same_bits(what, got, want) {
        panic!("{e}");
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(a, b)| {
            let d = (a - b).abs();
            if d.is_nan() { f32::INFINITY } else { d }
        })
        .fold(0.0f32, f32::max)
}

// ---- `lstm run` on the golden data ----

/// `lstm run --format F [--prefix P] --weights W --input X --output Y`,
/// for the caller to add options to.
fn lstm_run(format: &str, prefix: Option<&str>, weights: &Path, input: &Path, y: &Path) -> Command {
    let mut cmd = lstm();
    cmd.args(["run", "--format", format]);
    if let Some(p) = prefix {
        cmd.args(["--prefix", p]);
    }
    cmd.arg("--weights")
        .arg(weights)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(y);
    cmd
}

/// `lstm run --format seed` on the numpy cases (tests/golden.rs checks the
/// library on them).
#[test]
fn cli_run_matches_numpy() {
    let tmp = tempfile::tempdir().unwrap();
    for case in NUMPY_CASES {
        let dir = golden::dir(case);
        let y_path = tmp.path().join(format!("{case}_y.npy"));
        let s_path = tmp.path().join(format!("{case}_state.npz"));
        let mut cmd = lstm_run(
            "seed",
            None,
            &dir.join("weights.npz"),
            &dir.join("x.npy"),
            &y_path,
        );
        cmd.arg("--state-out").arg(&s_path);
        if dir.join("state_in.npz").exists() {
            cmd.arg("--state-in").arg(dir.join("state_in.npz"));
        }
        run_ok(&mut cmd);
        let (shape, ey, ec, em) = numpy_expected(case);
        let y = io::read_npy(&y_path).unwrap();
        assert_eq!(y.shape, shape, "{case}: output shape");
        assert_close_to_numpy(&format!("{case} y"), &y.data, &ey, None);
        let (c, m) = golden::read_state(&s_path);
        assert_close_to_numpy(&format!("{case} c"), &c.data, &ec, None);
        assert_close_to_numpy(&format!("{case} m"), &m.data, &em, None);
    }
}

/// Issue 17: the state file's extension decides its format (finding 9:
/// `--state-out s.safetensors` wrote npz bytes that `--state-in` then
/// rejected), an unknown one is an error before anything runs, and two
/// outputs naming one file are an error that leaves it alone (finding 10:
/// both were staged under one name and the old content was lost).
#[test]
fn lstm_run_output_files_never_collide_or_lie_about_their_format() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden::dir("seed");
    let (w, x) = (dir.join("weights.npz"), dir.join("x.npy"));
    let y = tmp.path().join("y.npy");
    // .safetensors: a safetensors file, readable by --state-in, same numbers.
    let (npz, st) = (tmp.path().join("s.npz"), tmp.path().join("s.safetensors"));
    for s in [&npz, &st] {
        run_ok(lstm_run("seed", None, &w, &x, &y).arg("--state-out").arg(s));
    }
    let (a, b) = (
        io::read_npz(&npz).unwrap(),
        io::read_safetensors(&st).unwrap(),
    );
    for t in ["c", "m"] {
        assert_eq!(a.get(t).unwrap().data, b.get(t).unwrap().data, "{t}");
    }
    let y2 = tmp.path().join("y2.npy");
    run_ok(
        lstm_run("seed", None, &w, &x, &y2)
            .arg("--state-in")
            .arg(&st),
    );
    // An unknown extension: an error, nothing written.
    let bad = tmp.path().join("s.bin");
    let yb = tmp.path().join("yb.npy");
    let err = run_err(
        lstm_run("seed", None, &w, &x, &yb)
            .arg("--state-out")
            .arg(&bad),
    );
    assert!(err.contains("s.bin") && err.contains("extension"), "{err}");
    assert!(!bad.exists() && !yb.exists());
    // The same file twice (also through `..`): an error; its content stays.
    // (`--output` must be `.npy` or have no extension: the same name twice
    // is an extension error first.)
    let same = tmp.path().join("same.npz");
    std::fs::write(&same, b"precious").unwrap();
    let dotted = tmp.path().join("sub/../same.npz");
    std::fs::create_dir(tmp.path().join("sub")).unwrap();
    let err = run_err(
        lstm_run("seed", None, &w, &x, &same)
            .arg("--state-out")
            .arg(&same),
    );
    assert!(err.contains("same.npz"), "{err}");
    #[cfg(unix)]
    {
        let link = tmp.path().join("same.npy");
        std::os::unix::fs::symlink("same.npz", &link).unwrap();
        for other in [&same, &dotted] {
            let err = run_err(
                lstm_run("seed", None, &w, &x, &link)
                    .arg("--state-out")
                    .arg(other),
            );
            assert!(err.contains("same file"), "{err}");
            assert_eq!(std::fs::read(&same).unwrap(), b"precious");
        }
    }
}

/// Issue 17, finding 11: the output path is followed, not replaced. A FIFO
/// (like a device: `/dev/null` as root became a regular file) is written
/// through and stays a FIFO; a symbolic link stays a link and its target
/// gets the new file; a directory is an error.
#[cfg(unix)]
#[test]
fn lstm_run_writes_through_fifos_and_follows_links() {
    use std::os::unix::fs::FileTypeExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden::dir("seed");
    let (w, x) = (dir.join("weights.npz"), dir.join("x.npy"));
    let plain = tmp.path().join("plain.npy");
    run_ok(&mut lstm_run("seed", None, &w, &x, &plain));
    let want = std::fs::read(&plain).unwrap();
    // A FIFO, read by a thread while `lstm` writes it.
    let fifo = tmp.path().join("pipe.npy");
    run_ok(Command::new("mkfifo").arg(&fifo));
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    run_ok(&mut lstm_run("seed", None, &w, &x, &fifo));
    // Checked before joining: had the FIFO been renamed over, the reader
    // would wait forever for a writer.
    let ft = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(ft.is_fifo(), "the FIFO was replaced: {ft:?}");
    assert_eq!(reader.join().unwrap(), want, "bytes through the FIFO");
    // A link to an existing file, and a dangling one.
    let target = tmp.path().join("target.npy");
    std::fs::write(&target, b"old").unwrap();
    let link = tmp.path().join("link.npy");
    std::os::unix::fs::symlink("target.npy", &link).unwrap();
    run_ok(&mut lstm_run("seed", None, &w, &x, &link));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&target).unwrap(), want);
    let dangling = tmp.path().join("dangling.npy");
    std::os::unix::fs::symlink("created.npy", &dangling).unwrap();
    run_ok(&mut lstm_run("seed", None, &w, &x, &dangling));
    assert_eq!(std::fs::read(tmp.path().join("created.npy")).unwrap(), want);
    let err = run_err(&mut lstm_run("seed", None, &w, &x, tmp.path()));
    assert!(err.contains("directory"), "{err}");
}

/// Issue 17, finding 12: SIGINT or SIGTERM while outputs are being written
/// removes the temporary files (the old output stays intact). The run is
/// held mid-write by a `--state-out` FIFO nobody reads, after `--output` has
/// been staged.
#[cfg(unix)]
#[test]
fn lstm_run_interrupted_leaves_no_temporary_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden::dir("seed");
    let (w, x) = (dir.join("weights.npz"), dir.join("x.npy"));
    for signal in ["INT", "TERM"] {
        let y = tmp.path().join("y.npy");
        std::fs::write(&y, b"old output").unwrap();
        let fifo = tmp.path().join("state.npz");
        let _ = std::fs::remove_file(&fifo);
        run_ok(Command::new("mkfifo").arg(&fifo));
        let child = lstm_run("seed", None, &w, &x, &y)
            .arg("--state-out")
            .arg(&fifo)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let staged = || {
            std::fs::read_dir(tmp.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".tmp"))
                .collect::<Vec<_>>()
        };
        // Wait (up to a minute) until the output is staged and the run
        // blocks opening the FIFO.
        let start = std::time::Instant::now();
        while staged().is_empty() && start.elapsed().as_secs() < 60 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!staged().is_empty(), "the output was never staged");
        std::thread::sleep(std::time::Duration::from_millis(100));
        run_ok(
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string()),
        );
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(130),
            "SIG{signal}: {}",
            stderr(&out)
        );
        assert!(staged().is_empty(), "SIG{signal} left {:?}", staged());
        assert_eq!(std::fs::read(&y).unwrap(), b"old output");
    }
}

/// The `seed` golden's weights and input, copied into `dir` (tests that
/// check these files are never written must not risk the committed ones).
fn seed_copies(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = golden::dir("seed");
    let (w, x) = (dir.join("weights.npz"), dir.join("x.npy"));
    std::fs::copy(src.join("weights.npz"), &w).unwrap();
    std::fs::copy(src.join("x.npy"), &x).unwrap();
    (w, x)
}

/// Issue 17 review, points 1, 2 and 7: outputs are compared by where they
/// land, not by name. A dangling link to the other output (or two dangling
/// links to one target), a hard link, or an output naming an input
/// (`--weights`, `--input`, `--state-in`, `--seq-lens`, also through a link
/// or a hard link) is an error before anything is written; `--output` with
/// an extension other than `.npy` is an error naming it.
#[cfg(unix)]
#[test]
fn lstm_run_outputs_never_alias_each_other_or_an_input() {
    use std::os::unix::fs::{MetadataExt, symlink};
    let tmp = tempfile::tempdir().unwrap();
    let t = |name: &str| tmp.path().join(name);
    let (w, x) = seed_copies(tmp.path());
    let (w_bytes, x_bytes) = (std::fs::read(&w).unwrap(), std::fs::read(&x).unwrap());
    // A link to the state file, which does not exist yet.
    symlink("s.npz", t("link.npy")).unwrap();
    let err = run_err(
        lstm_run("seed", None, &w, &x, &t("link.npy"))
            .arg("--state-out")
            .arg(t("s.npz")),
    );
    assert!(err.contains("same file"), "{err}");
    assert!(!t("s.npz").exists(), "s.npz was written");
    // Two dangling links to one target.
    symlink("target", t("a.npy")).unwrap();
    symlink("target", t("b.npz")).unwrap();
    let err = run_err(
        lstm_run("seed", None, &w, &x, &t("a.npy"))
            .arg("--state-out")
            .arg(t("b.npz")),
    );
    assert!(err.contains("same file"), "{err}");
    assert!(!t("target").exists(), "the links' target was written");
    // Hard links: one file under two names.
    std::fs::write(t("h.npy"), b"precious").unwrap();
    std::fs::hard_link(t("h.npy"), t("h.npz")).unwrap();
    let err = run_err(
        lstm_run("seed", None, &w, &x, &t("h.npy"))
            .arg("--state-out")
            .arg(t("h.npz")),
    );
    assert!(err.contains("same file"), "{err}");
    for n in ["h.npy", "h.npz"] {
        assert_eq!(std::fs::read(t(n)).unwrap(), b"precious", "{n}");
    }
    let ino = |n: &str| std::fs::metadata(t(n)).unwrap().ino();
    assert_eq!(ino("h.npy"), ino("h.npz"), "the hard link was broken");
    // Outputs naming inputs: by name, through a link, through a hard link.
    let (s_in, y_free) = (t("state_in.npz"), t("free.npy"));
    std::fs::copy(golden::dir("seed").join("state_in.npz"), &s_in).unwrap();
    let s_bytes = std::fs::read(&s_in).unwrap();
    symlink("x.npy", t("x_link.npy")).unwrap();
    std::fs::hard_link(&w, t("w_hard.npz")).unwrap();
    let cases: [(&Path, &str, &Path); 5] = [
        (&y_free, "--state-out", &w),
        (&x, "--state-out", &t("s2.npz")),
        (&t("x_link.npy"), "--state-out", &t("s3.npz")),
        (&y_free, "--state-out", &t("w_hard.npz")),
        (&y_free, "--state-out", &s_in),
    ];
    for (y, flag, s) in cases {
        let _ = std::fs::remove_file(&y_free);
        let err = run_err(
            lstm_run("seed", None, &w, &x, y)
                .arg("--state-in")
                .arg(&s_in)
                .arg(flag)
                .arg(s),
        );
        assert!(err.contains("same file"), "{y:?} {s:?}: {err}");
        assert_eq!(std::fs::read(&w).unwrap(), w_bytes, "{y:?} {s:?}: weights");
        assert_eq!(std::fs::read(&x).unwrap(), x_bytes, "{y:?} {s:?}: input");
        assert_eq!(std::fs::read(&s_in).unwrap(), s_bytes, "{y:?} {s:?}: state");
        assert!(!y_free.exists(), "{y:?} {s:?}: an output was written");
    }
    // --seq-lens: a sequence model whose --output is the lengths file.
    let dir = golden::sequence("torch_2layer_bidir_lens");
    let lens = t("lens.npy");
    std::fs::copy(dir.join("seq_lens.npy"), &lens).unwrap();
    let lens_bytes = std::fs::read(&lens).unwrap();
    let err = run_err(
        lstm_run(
            "pytorch",
            Some("lstm."),
            &dir.join("weights.safetensors"),
            &dir.join("x.npy"),
            &lens,
        )
        .arg("--seq-lens")
        .arg(&lens),
    );
    assert!(err.contains("same file"), "{err}");
    assert_eq!(std::fs::read(&lens).unwrap(), lens_bytes);
    // --output's extension: .npy or none.
    let st = t("y.safetensors");
    let err = run_err(&mut lstm_run("seed", None, &w, &x, &st));
    assert!(
        err.contains("y.safetensors") && err.contains(".npy"),
        "{err}"
    );
    assert!(!st.exists());
    run_ok(&mut lstm_run("seed", None, &w, &x, &t("no_extension")));
}

/// Issue 17 review, point 5: `/dev/stdout` (and `/dev/fd/1`,
/// `/proc/self/fd/1`) is written through: into a pipe (it resolved to a
/// `pipe:[…]` name that does not exist and failed), and into a file the
/// shell redirected stdout to (that file was renamed over: a new inode, and
/// whatever the shell wrote to the fd afterwards was lost).
#[cfg(target_os = "linux")]
#[test]
fn lstm_run_writes_through_stdout() {
    use std::os::unix::fs::MetadataExt;
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden::dir("seed");
    let (w, x) = (dir.join("weights.npz"), dir.join("x.npy"));
    let plain = tmp.path().join("plain.npy");
    run_ok(&mut lstm_run("seed", None, &w, &x, &plain));
    let want = std::fs::read(&plain).unwrap();
    for out in ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"] {
        let got = run_ok(lstm_run("seed", None, &w, &x, Path::new(out)).stdout(Stdio::piped()));
        assert_eq!(got.stdout, want, "{out} into a pipe");
        // `{ echo hi; lstm run … --output /dev/stdout; echo after; } > file`:
        // one open file (no O_APPEND) shared with the child, whose bytes
        // must land between the two lines.
        use std::io::Write as _;
        let file = tmp.path().join("redirected");
        let mut handle = std::fs::File::create(&file).unwrap();
        let before = handle.metadata().unwrap().ino();
        handle.write_all(b"hi\n").unwrap();
        let child_stdout = Stdio::from(handle.try_clone().unwrap());
        run_ok(lstm_run("seed", None, &w, &x, Path::new(out)).stdout(child_stdout));
        handle.write_all(b"after\n").unwrap();
        let after = std::fs::symlink_metadata(&file).unwrap();
        assert!(after.file_type().is_file(), "{out}: {after:?}");
        assert_eq!(
            after.ino(),
            before,
            "{out}: the redirected file was replaced"
        );
        let expected = [&b"hi\n"[..], &want, b"after\n"].concat();
        assert!(
            std::fs::read(&file).unwrap() == expected,
            "{out} into a file: the npy bytes are not between the shell's lines"
        );
    }
}

/// Issue 17 review, point 6: replacing an output keeps its mode (it was
/// reset to the umask's default).
#[cfg(unix)]
#[test]
fn lstm_run_keeps_the_mode_of_replaced_outputs() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden::dir("seed");
    let (w, x) = (dir.join("weights.npz"), dir.join("x.npy"));
    let (y, s) = (tmp.path().join("y.npy"), tmp.path().join("s.npz"));
    for (p, mode) in [(&y, 0o600), (&s, 0o640)] {
        std::fs::write(p, b"old").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    run_ok(
        lstm_run("seed", None, &w, &x, &y)
            .arg("--state-out")
            .arg(&s),
    );
    for (p, mode) in [(&y, 0o600), (&s, 0o640)] {
        let got = std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(got, mode, "{p:?}: mode {got:o}");
        assert_ne!(std::fs::read(p).unwrap(), b"old", "{p:?} not replaced");
    }
}

/// Issue 17 review, point 8: a destination that cannot be replaced is found
/// before anything is: an immutable `--state-out` (`chattr +i`; its rename
/// failed after `--output` had been replaced) leaves `--output` alone.
/// Skipped where `chattr +i` is not allowed (it needs CAP_LINUX_IMMUTABLE
/// and a file system that has the flag).
#[cfg(target_os = "linux")]
#[test]
fn lstm_run_checks_every_destination_before_replacing_any() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden::dir("seed");
    let (w, x) = (dir.join("weights.npz"), dir.join("x.npy"));
    let (y, s) = (tmp.path().join("y.npy"), tmp.path().join("s.npz"));
    std::fs::write(&y, b"old output").unwrap();
    std::fs::write(&s, b"old state").unwrap();
    let chattr = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .arg(&s)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !chattr("+i") {
        eprintln!("skipped: chattr +i is not allowed here");
        return;
    }
    let out = run(lstm_run("seed", None, &w, &x, &y)
        .arg("--state-out")
        .arg(&s));
    assert!(chattr("-i"), "chattr -i");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("s.npz") && err.lines().count() == 1, "{err}");
    assert_eq!(std::fs::read(&y).unwrap(), b"old output");
    assert_eq!(std::fs::read(&s).unwrap(), b"old state");
}

/// Issue 17: CLI numbers are checked before anything is allocated or run
/// (`generate --batch 0` ran as batch 1; `--length` × `--batch` beyond any
/// memory aborted; bench sizes beyond the documented tensor limit).
#[test]
fn cli_numbers_out_of_range_are_errors() {
    for (args, want) in [
        (&["generate", "--batch", "0"][..], "--batch"),
        (
            &["generate", "--batch", "1000000"],
            "--batch must be from 1 to 65536",
        ),
        (
            &[
                "generate",
                "--batch",
                "2",
                "--length",
                "18446744073709551615",
            ],
            "limit",
        ),
        (&["generate", "--temperature", "NaN"], "temperature"),
        (&["generate", "--prompt", "Zebra€"], "€"),
        (&["generate", "--top-k", "0"], "top-k"),
        (&["bench", "--hidden", "30000", "--input", "30000"], "limit"),
        (
            &["bench", "--steps", "1000000000", "--batch", "64"],
            "limit",
        ),
        (
            &["bench", "--projection", "300", "--hidden", "256"],
            "projection",
        ),
    ] {
        let out = run(lstm().args(args));
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(want) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
        // Nothing printed before the error (the prompt was, once).
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// `lstm run` reads every framework format (tests/frameworks.rs checks the
/// library on these cases).
#[test]
fn lstm_run_reads_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    for case in golden::framework_cases() {
        let dir = golden::framework(&case);
        let m = golden::meta(&dir);
        let y_path = tmp.path().join(format!("{case}.npy"));
        let mut cmd = lstm_run(
            m["format"].as_str().unwrap(),
            Some(m["prefix"].as_str().unwrap()),
            &golden::weights_file(&dir),
            &dir.join("x.npy"),
            &y_path,
        );
        cmd.arg("--state-in").arg(dir.join("state_in.npz"));
        if m["format"] == "keras" {
            // An npz records no activations: the user vouches for Keras' defaults.
            cmd.arg("--default-activations");
        }
        if m["format"] == "tf" {
            cmd.args(["--forget-bias", &m["forget_bias"].to_string()]);
            if let Some(c) = m["cell_clip"].as_f64() {
                cmd.args(["--cell-clip", &c.to_string()]);
            }
            if let Some(c) = m["proj_clip"].as_f64() {
                cmd.args(["--proj-clip", &c.to_string()]);
            }
        }
        run_ok(&mut cmd);
        let y = io::read_npy(&y_path).unwrap();
        let want = io::read_npy(dir.join("expected_y.npy")).unwrap();
        assert_eq!(y.shape, want.shape, "{case}");
        // frameworks.rs checks the library against the framework (the
        // derived bound); the CLI must give the library's numbers, bit for
        // bit.
        let (lib, _, _) = golden::library_framework_run(&dir);
        assert_same_bits(&format!("{case}: lstm run vs the library"), &y.data, &lib);
    }
}

/// Issue 16: an ONNX model runs in the layout its graph declares. A
/// batch-first 1-layer export run without `--batch-first` is right (it
/// was silently wrong, error 0.45); `--batch-first` on it is not needed
/// (a note), and on a time-major graph it is an error, not a wrong answer.
#[test]
fn lstm_run_takes_the_onnx_layout_from_the_graph() {
    let tmp = tempfile::tempdir().unwrap();
    let y = tmp.path().join("y.npy");
    for case in [
        "onnx_export_torch_dynamo_bf",
        "onnx_export_torch_legacy_1layer_bf_square",
    ] {
        let bf = golden::sequence(case);
        let want = io::read_npy(bf.join("expected_y.npy")).unwrap();
        for flag in [false, true] {
            let mut cmd = lstm_run(
                "onnx",
                None,
                &bf.join("weights.onnx"),
                &bf.join("x.npy"),
                &y,
            );
            if flag {
                cmd.arg("--batch-first");
            }
            let out = run_ok(&mut cmd);
            let got = io::read_npy(&y).unwrap();
            assert_eq!(got.shape, want.shape);
            assert_same_bits(case, &got.data, &golden::library_sequence_run(&bf).0);
            assert_eq!(
                stderr(&out).contains("--batch-first is not needed"),
                flag,
                "{}",
                stderr(&out)
            );
        }
    }
    // B = T: run time-major, the shapes fit and the answer is wrong — what
    // reading the layout from the graph prevents.
    let sq = golden::sequence("onnx_export_torch_legacy_1layer_bf_square");
    let m = lstm_kernels::import::onnx_model(sq.join("weights.onnx")).unwrap();
    let x = io::read_npy(sq.join("x.npy")).unwrap();
    let want = io::read_npy(sq.join("expected_y.npy")).unwrap();
    let mut st = m.stack.new_state(x.shape[0]).unwrap();
    let mut wrong = vec![0.0; want.data.len()];
    m.stack
        .forward(
            &mut st,
            &x.data,
            &mut wrong,
            lstm_kernels::SeqOptions::default(),
        )
        .unwrap();
    assert!(max_abs_diff(&wrong, &want.data) > 1e-2);
    let tm = golden::sequence("onnx_export_torch_2layer_op14");
    std::fs::remove_file(&y).unwrap();
    let err = run_err(
        lstm_run(
            "onnx",
            None,
            &tm.join("weights.onnx"),
            &tm.join("x.npy"),
            &y,
        )
        .arg("--batch-first"),
    );
    assert!(
        err.contains("--batch-first contradicts") && err.contains("time-major"),
        "{err}"
    );
    assert!(!y.exists());
    // Layers of different sizes (the tf2onnx stack: 4 then 5 units) have no
    // single [L·D, B, H] state file: an error, not a panic.
    let st = golden::sequence("onnx_export_tf2onnx_stack");
    let err = run_err(
        lstm_run(
            "onnx",
            None,
            &st.join("weights.onnx"),
            &st.join("x.npy"),
            &y,
        )
        .arg("--state-out")
        .arg(tmp.path().join("s.npz")),
    );
    assert!(err.contains("share one size"), "{err}");
}

/// `lstm run --format pytorch` runs stacks, with `--seq-lens`,
/// `--batch-first` and PyTorch-layout state files (tests/sequences.rs
/// checks the library on these cases).
#[test]
fn lstm_run_runs_stacks() {
    let tmp = tempfile::tempdir().unwrap();
    for case in golden::sequence_cases() {
        let dir = golden::sequence(&case);
        let meta = golden::meta(&dir);
        let (y_path, s_path) = (
            tmp.path().join(format!("{case}_y.npy")),
            tmp.path().join(format!("{case}_s.npz")),
        );
        let format = meta["format"].as_str().unwrap();
        // Keras models: batch-first without being told (--batch-first is
        // accepted all the same).
        let weights = if format == "keras" {
            dir.join("model.keras")
        } else {
            golden::weights_file(&dir)
        };
        let mut cmd = lstm_run(
            format,
            Some(meta["prefix"].as_str().unwrap()),
            &weights,
            &dir.join("x.npy"),
            &y_path,
        );
        // ONNX graphs without state outputs have no state files.
        let stateful = dir.join("expected_state.npz").exists();
        if stateful {
            cmd.arg("--state-in")
                .arg(dir.join("state_in.npz"))
                .arg("--state-out")
                .arg(&s_path);
        }
        // An ONNX model's layout is read from its graph (a Keras model's
        // from its config).
        if meta["batch_first"].as_bool().unwrap() && format != "onnx" {
            cmd.arg("--batch-first");
        }
        if dir.join("seq_lens.npy").exists() {
            cmd.arg("--seq-lens").arg(dir.join("seq_lens.npy"));
        }
        run_ok(&mut cmd);
        // sequences.rs checks the library against the framework (the
        // derived bound); the CLI must give the library's numbers, bit for
        // bit, in the framework's shapes.
        let (lib_y, lib_state) = golden::library_sequence_run(&dir);
        let y = io::read_npy(&y_path).unwrap();
        let want_y = io::read_npy(dir.join("expected_y.npy")).unwrap();
        assert_eq!(y.shape, want_y.shape, "{case} y");
        assert_same_bits(&format!("{case} y"), &y.data, &lib_y);
        if stateful {
            let (c, m) = golden::read_state(&s_path);
            let (want_c, want_m) = golden::read_state(dir.join("expected_state.npz"));
            assert_eq!(
                (&c.shape, &m.shape),
                (&want_c.shape, &want_m.shape),
                "{case}"
            );
            let (lib_c, lib_m) = lib_state.expect("a stateful case");
            assert_same_bits(&format!("{case} c_n"), &c.data, &lib_c);
            assert_same_bits(&format!("{case} h_n"), &m.data, &lib_m);
        }
    }
    // Lengths longer than the sequence: a one-line error, no output.
    let bad = tmp.path().join("bad_lens.npy");
    let lens: Vec<u8> = [9i64, 1, 1, 1]
        .iter()
        .flat_map(|l| l.to_le_bytes())
        .collect();
    std::fs::write(&bad, golden::npy_bytes("<i8", 4, &lens)).unwrap();
    let dir = golden::sequence("torch_2layer_bidir_lens");
    let y_path = tmp.path().join("never.npy");
    let err = run_err(
        lstm_run(
            "pytorch",
            Some("lstm."),
            &dir.join("weights.safetensors"),
            &dir.join("x.npy"),
            &y_path,
        )
        .arg("--seq-lens")
        .arg(&bad),
    );
    assert!(
        err.contains("seq_lens[0] = 9") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert!(!y_path.exists());
}

/// Keras model files (`.keras` and legacy `.h5`) run batch-first without
/// `--batch-first`, `go_backwards` and a last LSTM that returns its final
/// output only as Keras does; layers around the LSTMs are notes on
/// stderr; unsupported activations and an npz without
/// `--default-activations` are one-line errors that leave no output
/// (tests/keras.rs checks the library on these cases).
#[test]
fn lstm_run_reads_keras_files() {
    let tmp = tempfile::tempdir().unwrap();
    let y_path = tmp.path().join("y.npy");
    for case in ["go_backwards", "embed_lstm_dense"] {
        let dir = golden::dir("keras").join(case);
        for file in ["model.keras", "model.h5"] {
            let out = run_ok(
                lstm_run("keras", None, &dir.join(file), &dir.join("x.npy"), &y_path)
                    .arg("--state-in")
                    .arg(dir.join("state_in.npz")),
            );
            let y = io::read_npy(&y_path).unwrap();
            let want = io::read_npy(dir.join("expected_y.npy")).unwrap();
            assert_eq!(y.shape, want.shape, "{case} {file}");
            // keras.rs checks the library against Keras (the derived
            // bound); the CLI must give the library's numbers, bit for bit.
            let model = lstm_kernels::import::keras_model(dir.join(file)).unwrap();
            let (lib, _, _) = golden::run_keras(&dir, &model);
            assert_same_bits(&format!("{case} {file}"), &y.data, &lib);
            let notes = stderr(&out);
            if case == "embed_lstm_dense" {
                assert!(
                    notes.contains("Embedding") && notes.contains("Dense"),
                    "{notes}"
                );
            }
        }
    }
    std::fs::remove_file(&y_path).unwrap();
    let x = golden::dir("keras").join("go_backwards/x.npy");
    for (weights, words) in [
        (
            golden::dir("keras").join("bad_relu/model.keras"),
            &["lstm_relu", "relu", "nothing was run"][..],
        ),
        (
            golden::framework("keras_lstm").join("weights.npz"),
            &["--default-activations", "nothing was run"][..],
        ),
        (
            golden::dir("keras").join("lstm_bidir_sum_last/model.keras"),
            &["--state-in"][..],
        ),
    ] {
        let mut cmd = lstm_run("keras", None, &weights, &x, &y_path);
        if weights.ends_with("lstm_bidir_sum_last/model.keras") {
            cmd.arg("--state-out").arg(tmp.path().join("s.npz"));
        }
        let err = run_err(&mut cmd);
        for w in words {
            assert!(err.contains(w), "{}: `{w}` not in {err}", weights.display());
        }
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!y_path.exists());
    }
}

/// `torch.save` files that are not a usable state dict: a whole pickled
/// model, or an LSTM under a prefix the user did not give, are one-line
/// errors that say what to do, and leave no output.
#[test]
fn lstm_run_explains_torch_files_it_cannot_use() {
    let tmp = tempfile::tempdir().unwrap();
    let x = golden::framework("torch_pt_lstm").join("x.npy");
    let y_path = tmp.path().join("never.npy");
    for model in ["full_model.pt", "lstm_module.pt"] {
        let err = run_err(&mut lstm_run(
            "pytorch",
            None,
            &golden::file("bad_torch", model),
            &x,
            &y_path,
        ));
        assert!(
            err.contains("state_dict()") && err.trim().lines().count() == 1,
            "{err}"
        );
    }
    // The LSTM is under `lstm.`: the message names the key and the flag.
    let dir = golden::framework("torch_pt_legacy");
    let err = run_err(&mut lstm_run(
        "pytorch",
        None,
        &golden::weights_file(&dir),
        &dir.join("x.npy"),
        &y_path,
    ));
    assert!(
        err.contains("lstm.weight_ih_l0") && err.contains("--prefix lstm."),
        "{err}"
    );
    assert!(!y_path.exists());
}

// ---- `lstm bench` ----

/// `cpu_steal` is null (no `/proc/stat`) or a share in [0, 1]; on Linux,
/// where `/proc/stat` has a steal column, a number.
fn assert_steal_is_a_share(v: &serde_json::Value, text: &str) {
    let steal = &v["cpu_steal"];
    match steal.as_f64() {
        Some(s) => assert!((0.0..=1.0).contains(&s), "{text}"),
        None => assert!(steal.is_null(), "{text}"),
    }
    if std::fs::read_to_string("/proc/stat").is_ok_and(|t| t.lines().any(|l| l.starts_with("cpu ")))
    {
        assert!(steal.is_f64(), "{text}");
    }
}

#[test]
fn cli_bench_json_has_the_fields() {
    let out = run_ok(lstm().args([
        "bench",
        "--batch",
        "3",
        "--input",
        "5",
        "--hidden",
        "7",
        "--head",
        "2",
        "--peephole",
        "matrix",
        "--steps",
        "4",
        "--seconds",
        "0.05",
        "--json",
    ]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "isa",
        "kernel",
        "batch",
        "input",
        "hidden",
        "head",
        "peephole",
        "steps",
        "threads",
        "sample_steps_per_s",
        "gflops",
        "ns_per_step",
        "cpu_steal",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {text}");
    }
    assert_steal_is_a_share(&v, &text);
    assert_eq!(v["batch"], 3);
    assert_eq!(v["head"], 2);
    assert_eq!(v["peephole"], "matrix");
    let sps = v["sample_steps_per_s"].as_f64().unwrap();
    let gf = v["gflops"].as_f64().unwrap();
    // FLOPs per sample-step: 2·(5+7)·28 + 2·7·7 + 2·7·2 = 798.
    assert!(
        (gf / sps * 1e9 - 798.0).abs() < 1e-6 * 798.0,
        "gflops {gf} vs sps {sps}"
    );
}

/// `LSTM_KERNELS_ISA` and `--isa` select the path, and the JSON's
/// `kernel_runs` shows that only that path's kernel ran.
#[test]
fn cli_forced_isa_really_runs() {
    for isa in Isa::all_available() {
        for via_env in [true, false] {
            let mut cmd = lstm();
            cmd.args([
                "bench",
                "--batch",
                "2",
                "--input",
                "3",
                "--hidden",
                "9",
                "--steps",
                "2",
                "--seconds",
                "0",
                "--json",
            ]);
            if via_env {
                cmd.env("LSTM_KERNELS_ISA", isa.name());
            } else {
                cmd.env_remove("LSTM_KERNELS_ISA")
                    .args(["--isa", isa.name()]);
            }
            let out = run_ok(&mut cmd);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["isa"], isa.name());
            for other in Isa::ALL {
                let runs = v["kernel_runs"][other.name()].as_u64().unwrap();
                assert_eq!(
                    runs > 0,
                    other == isa,
                    "{isa} forced, {other} ran {runs} times"
                );
            }
        }
    }
    let err = run_err(
        lstm()
            .args(["bench", "--seconds", "0"])
            .env("LSTM_KERNELS_ISA", "sse1"),
    );
    assert!(err.contains("sse1"));
}

// ---- `lstm codegen` ----

#[test]
fn lstm_codegen_dumps_the_source() {
    let out = run_ok(lstm().arg("codegen"));
    let src = String::from_utf8(out.stdout).unwrap();
    assert!(src.starts_with("// @generated by lstm-kernels-codegen"));
    for name in generated_kernels() {
        assert!(src.contains(&format!("\"{name}\"")), "{name}");
    }
    let out = run(lstm().args(["codegen", "--shapes", "only:9x9"]));
    let src = String::from_utf8_lossy(&out.stdout);
    assert!(
        src.contains("\"blocked_9x9__avx2_f32x8\"") && src.contains("\"lanes_9x9__avx512_f32x16\"")
    );
    // --list with --shapes: the names of the kernels of that list, one a
    // line, each of them in the source above (it printed the source).
    let out = run_ok(lstm().args(["codegen", "--shapes", "only:9x9", "--list"]));
    let names = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = names.lines().collect();
    assert!(names.contains(&"blocked_9x9__avx2_f32x8"), "{names:?}");
    for name in &names {
        assert!(src.contains(&format!("\"{name}\"")), "{name}");
    }
    // Without --shapes, --list names this build's kernels.
    let out = run_ok(lstm().args(["codegen", "--list"]));
    let built = String::from_utf8(out.stdout).unwrap();
    assert_eq!(built.lines().collect::<Vec<_>>(), generated_kernels());
    let err = run_err(lstm().args(["codegen", "--shapes", "9y9"]));
    assert!(err.contains("bad shape `9y9`"));
}

// ---- error paths: one-line error, nonzero exit, no partial output ----

#[test]
fn cli_errors_are_one_line_and_leave_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let y = tmp.path().join("y.npy");
    let s = tmp.path().join("s.npz");
    let path = |case: &str, file: &str| golden::file(case, file).display().to_string();
    let w = path("seed", "weights.npz");
    let x = path("seed", "x.npy");
    let x_other = path("plain", "x.npy");
    let st_other = path("single_step", "state_in.npz");
    let (ys, ss) = (y.display().to_string(), s.display().to_string());
    // `lstm run --weights W --input X --output Y <extra>`.
    let run_args = |weights: &str, input: &str, output: &str, extra: &[&str]| {
        [
            "run",
            "--weights",
            weights,
            "--input",
            input,
            "--output",
            output,
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect::<Vec<String>>()
    };
    let args = |a: &[&str]| a.iter().map(|a| a.to_string()).collect::<Vec<String>>();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (run_args("/nope.npz", &x, &ys, &[]), "/nope.npz"),
        (run_args(&w, &x_other, &ys, &[]), "n_in = 7"),
        (run_args(&w, &x, &ys, &["--state-in", &st_other]), "[10, 5]"),
        (run_args(&w, &x, &ys, &["--state-in", &x]), "not a valid"),
        (run_args(&x, &x, &ys, &[]), "not a valid"),
        (
            run_args(&w, &x, &ys, &["--state-out", "/nonexistent-dir/s.npz"]),
            "nonexistent-dir",
        ),
        (
            run_args(&w, &x, "/nonexistent-dir/y.npy", &["--state-out", &ss]),
            "nonexistent-dir",
        ),
        (
            args(&["bench", "--batch", "0", "--seconds", "0"]),
            "--batch",
        ),
        (args(&["tune", "--batch", "0"]), "--batch"),
        // A review's findings: flags that could not apply were accepted
        // and ignored.
        (
            args(&["bench", "--catch-up", "--seconds", "0"]),
            "--streams",
        ),
        (
            args(&["bench", "--clients", "4", "--seconds", "0"]),
            "--streams",
        ),
        (
            args(&["bench", "--max-wait-us", "9", "--seconds", "0"]),
            "--streams",
        ),
        (
            args(&["bench", "--streams", "4", "--subnormal", "--seconds", "0"]),
            "--subnormal",
        ),
        (run_args(&w, &x, &ys, &["--prefix", "lstm."]), "--prefix"),
        (
            run_args(&w, &x, &ys, &["--state-out", &format!("{ss}.txt")]),
            "--state-out",
        ),
        (
            args(&["bench", "--hidden", "4", "--head", "5", "--seconds", "0"]),
            "head",
        ),
        (args(&["bench", "--steps", "0"]), "steps"),
        // Issue 17: an overlong run panicked in `Duration` (finding 6);
        // absurd thread counts started thousands of threads (finding 5).
        (args(&["bench", "--seconds", "1e308"]), "--seconds"),
        (
            args(&["bench", "--threads", "1000000", "--seconds", "0"]),
            "limit",
        ),
    ];
    for (args, needle) in cases {
        let err = run_err(lstm().args(&args));
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
        assert!(err.contains(needle), "{args:?}: `{err}` lacks `{needle}`");
        assert!(!y.exists() && !s.exists(), "{args:?} left an output file");
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "{args:?} left {leftovers:?}");
    }
}

/// `lstm … | head` closes stdout early: the CLI exits quietly, no panic.
#[test]
fn cli_survives_a_closed_stdout() {
    use std::io::Read;
    let mut child = lstm()
        .arg("codegen")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
}

/// Issue 14: `--precision bf16|int8` runs that precision's kernel (the
/// JSON says which and in what precision); `LSTM_KERNELS_BF16` /
/// `LSTM_KERNELS_INT8` force each kernel this CPU has, and the counters
/// show it ran; `lstm run --precision ...` gives bitwise what the library
/// gives; a variant the precision does not compute is a one-line error.
#[test]
fn cli_reduced_precision() {
    use lstm_kernels::{Lstm, Precision};
    for (p, env, kernels) in [
        (Precision::Bf16, "LSTM_KERNELS_BF16", Lstm::bf16_kernels()),
        (Precision::Int8, "LSTM_KERNELS_INT8", Lstm::int8_kernels()),
    ] {
        let name = p.name();
        let out = run_ok(lstm().args([
            "bench",
            "--batch",
            "17",
            "--input",
            "20",
            "--hidden",
            "33",
            "--steps",
            "2",
            "--seconds",
            "0",
            "--precision",
            name,
            "--json",
        ]));
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["precision"], name, "{j}");
        assert!(
            j["kernel"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{name}_")),
            "{j}"
        );
        let runs = format!("{name}_runs");
        for k in kernels {
            let short = k.split('_').nth(1).unwrap();
            let out = run_ok(
                lstm()
                    .env(env, short)
                    .args([
                        "bench", "--batch", "3", "--input", "5", "--hidden", "7", "--steps", "1",
                    ])
                    .args(["--seconds", "0", "--precision", name, "--json"]),
            );
            let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(j["kernel"], k, "{env}={short}: {j}");
            assert!(j[&runs].as_u64().unwrap() > 0, "{j}");
        }
        let err = run_err(lstm().args([
            "bench",
            "--precision",
            name,
            "--head",
            "3",
            "--seconds",
            "0",
        ]));
        assert!(
            err.contains(name) && err.contains("head") && err.lines().count() == 1,
            "{err}"
        );
        // lstm run in this precision equals the library's bitwise.
        let tmp = tempfile::tempdir().unwrap();
        let dir = golden::dir("plain");
        let (w, x) = (dir.join("weights.npz"), dir.join("x.npy"));
        let y = tmp.path().join("y.npy");
        run_ok(lstm_run("seed", None, &w, &x, &y).args(["--precision", name, "--threads", "1"]));
        let (cfg, seed) = io::load_seed_weights(&w).unwrap();
        let model = Lstm::new(
            cfg,
            lstm_kernels::LstmWeights::from_seed(&cfg, &seed).unwrap(),
        )
        .unwrap()
        .with_precision(p)
        .unwrap();
        let xs = io::read_npy(&x).unwrap();
        let batch = xs.shape[1];
        let mut st = model.new_state(batch).unwrap();
        let mut want = vec![0.0; xs.data.len() / cfg.n_input * cfg.n_output()];
        model.forward(&mut st, &xs.data, &mut want).unwrap();
        let got = io::read_npy(&y).unwrap().data;
        assert!(
            common::bits(&got) == common::bits(&want),
            "lstm run --precision {name} differs from the library"
        );
    }
}

/// Issue 14: `lstm run --format onnx` runs a DynamicQuantizeLSTM in int8
/// on its own int8 weights (bitwise what `import::onnx_model` gives), and
/// in f32 on the dequantized weights with `--precision f32`.
#[test]
fn lstm_run_runs_dynamic_quantize_lstm_in_int8() {
    use lstm_kernels::import;
    let dir = golden::dir("quantized").join("onnx_dq_tensor");
    let (w, x) = (dir.join("weights.onnx"), dir.join("x.npy"));
    let tmp = tempfile::tempdir().unwrap();
    let xs = io::read_npy(&x).unwrap();
    let model = import::onnx_model(&w).unwrap();
    for (flag, want_int8) in [(None, true), (Some("f32"), false)] {
        let y = tmp.path().join("y.npy");
        let mut cmd = lstm();
        cmd.args(["run", "--format", "onnx", "--weights"])
            .arg(&w)
            .arg("--input")
            .arg(&x)
            .arg("--output")
            .arg(&y)
            .args(["--threads", "1"]);
        if let Some(p) = flag {
            cmd.args(["--precision", p]);
        }
        run_ok(&mut cmd);
        let stack = if want_int8 {
            model.stack.clone()
        } else {
            model
                .stack
                .clone()
                .with_precision(lstm_kernels::Precision::F32)
                .unwrap()
        };
        assert_eq!(
            stack.layers()[0].forward.kernel_name().starts_with("int8_"),
            want_int8
        );
        let b = xs.shape[1];
        let mut st = stack.new_state(b).unwrap();
        let mut want = vec![0.0; xs.data.len() / xs.shape[2] * 16];
        stack
            .forward(&mut st, &xs.data, &mut want, model.seq_options())
            .unwrap();
        let got = io::read_npy(&y).unwrap().data;
        assert!(
            common::bits(&got) == common::bits(&want),
            "lstm run ({flag:?}) differs from the library"
        );
    }
}

/// `bench --streams`: the batcher against the ceiling and one call per
/// stream, one JSON object with the fields the issue asks for; bad
/// stream/client counts are one-line errors.
#[test]
fn cli_bench_streams_json() {
    let out = run_ok(lstm().args([
        "bench",
        "--streams",
        "40",
        "--clients",
        "4",
        "--max-wait-us",
        "100",
        "--think-us",
        "50",
        "--max-batch",
        "16",
        "--input",
        "7",
        "--hidden",
        "5",
        "--head",
        "3",
        "--peephole",
        "matrix",
        "--threads",
        "2",
        "--seconds",
        "0.3",
        "--json",
    ]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "streams",
        "clients",
        "max_wait_us",
        "threads",
        "frames_per_s",
        "ceiling_frames_per_s",
        "per_stream_frames_per_s",
        "mean_batch",
        "step_us",
        "p50_us",
        "p99_us",
        "max_us",
        "cpu_steal",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {text}");
    }
    assert_steal_is_a_share(&v, &text);
    assert_eq!(
        (v["streams"].as_u64(), v["clients"].as_u64()),
        (Some(40), Some(4))
    );
    assert_eq!(
        (v["think_us"].as_u64(), v["max_batch"].as_u64()),
        (Some(50), Some(16)),
        "{text}"
    );
    assert!(v["frames_per_s"].as_f64().unwrap() > 0.0, "{text}");
    // The latency target is max_wait + two of the run's step times.
    let (w, step) = (
        v["max_wait_us"].as_f64().unwrap(),
        v["step_us"].as_f64().unwrap(),
    );
    let target = v["p99_target_us"].as_f64().unwrap();
    assert!((target - (w + 2.0 * step)).abs() <= 1e-9 * target, "{text}");
    assert_eq!(
        v["p99_within_target"].as_bool(),
        Some(v["p99_us"].as_f64().unwrap() <= target),
        "{text}"
    );
    let mean = v["mean_batch"].as_f64().unwrap();
    assert!((1.0..=16.0).contains(&mean), "{text}");
    for bad in [
        ["--streams", "0"],
        ["--clients", "50"],
        ["--think-us", "20000000"],
    ] {
        let out = lstm()
            .args(["bench", "--streams", "40", "--seconds", "0"])
            .args(bad)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("--streams") || err.contains("clients") || err.contains("--think-us"),
            "{err}"
        );
    }
}

/// Issue 16: TensorFlow's own saved forms (a SavedModel, a checkpoint) are
/// not readable; `lstm run` says what to do instead (save as .keras, or
/// export to ONNX), whatever --format was given.
#[test]
fn lstm_run_explains_tensorflow_saved_forms() {
    let tmp = tempfile::tempdir().unwrap();
    let sm = tmp.path().join("export");
    std::fs::create_dir_all(sm.join("variables")).unwrap();
    std::fs::write(sm.join("saved_model.pb"), b"\x08\x01").unwrap();
    let ckpt = tmp.path().join("ckpt-3.index");
    std::fs::write(&ckpt, b"not read").unwrap();
    let x = golden::dir("plain").join("x.npy");
    let y = tmp.path().join("y.npy");
    for (weights, what) in [
        (sm.clone(), "SavedModel"),
        (sm.join("saved_model.pb"), "SavedModel"),
        (ckpt, "checkpoint"),
    ] {
        for format in ["keras", "tf"] {
            let err = run_err(&mut lstm_run(format, None, &weights, &x, &y));
            assert!(
                err.contains(what) && err.contains("m.keras") && err.lines().count() == 1,
                "{format} {}: {err}",
                weights.display()
            );
        }
    }
    assert!(!y.exists());
}

#[test]
fn cli_tune_writes_a_plan_file_that_bench_and_the_env_var_load() {
    let dir = std::env::temp_dir().join(format!("lstm-cli-tune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plans = dir.join("plans.txt");
    let shape = ["--batch", "9", "--input", "20", "--hidden", "40"];
    let out = run_ok(
        lstm()
            .arg("tune")
            .args(shape)
            .arg("--json")
            .arg("--out")
            .arg(&plans),
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["candidates"].as_array().unwrap().len() >= 2, "{j}");
    let (steps, confirm) = (
        j["steps"].as_u64().unwrap(),
        j["confirm_steps"].as_u64().unwrap(),
    );
    assert!(steps >= 1 && (confirm == 0 || confirm >= steps), "{j}");
    let chosen = j["chosen"].as_str().unwrap().to_string();
    let text = std::fs::read_to_string(&plans).unwrap();
    assert!(text.starts_with("lstm-kernels plans v1\n"), "{text}");
    let bench = |extra: &[&str], env: Option<&Path>| {
        let mut cmd = lstm();
        cmd.arg("bench")
            .args(shape)
            .args(["--steps", "2", "--seconds", "0", "--json"])
            .args(extra);
        if let Some(p) = env {
            cmd.env("LSTM_KERNELS_PLANS", p);
        }
        run_ok(&mut cmd)
    };
    let plans_s = plans.to_str().unwrap();
    for out in [bench(&["--plans", plans_s], None), bench(&[], Some(&plans))] {
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["tuning"], "file", "{j}");
        assert_eq!(j["plan"], chosen, "{j}");
        assert!(!j["cpu"].as_str().unwrap().is_empty(), "{j}");
    }
    // A corrupt file named by the variable: a warning, the heuristic plan.
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "lstm-kernels plans v1\nplan cpu=\"x\" kc=1\n").unwrap();
    let out = bench(&[], Some(&bad));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["tuning"], "heuristic", "{j}");
    assert!(
        stderr(&out).contains("LSTM_KERNELS_PLANS"),
        "{}",
        stderr(&out)
    );
    // ... but an error when given on the command line.
    let e = run_err(
        lstm()
            .arg("bench")
            .args(shape)
            .args(["--seconds", "0", "--plans"])
            .arg(&bad),
    );
    assert!(e.contains("bad.txt") && e.contains("line 2"), "{e}");
    // Forced and measured plans are reported as such.
    let j: serde_json::Value =
        serde_json::from_slice(&bench(&["--plan", "kc=16,partition=rows"], None).stdout).unwrap();
    assert_eq!(j["tuning"], "given", "{j}");
    assert_eq!(
        j["plan"], "kc=16 chunk=64 hoist=65536 partition=rows prefetch=0 ahead=0 fuse=0",
        "{j}"
    );
    let j: serde_json::Value =
        serde_json::from_slice(&bench(&["--tuning", "measure"], None).stdout).unwrap();
    assert_eq!(j["tuning"], "measured", "{j}");
    assert!(run_err(lstm().args(["bench", "--plan", "kc=x"])).contains("kc=x"));
    // A paired comparison with another plan reports both and the ratios.
    let j: serde_json::Value = serde_json::from_slice(
        &bench(&["--plan", "fuse=0", "--versus", "fuse=1,kc=8"], None).stdout,
    )
    .unwrap();
    let v = &j["versus"];
    assert_eq!(
        v["plan"], "kc=8 chunk=64 hoist=65536 partition=auto prefetch=0 ahead=0 fuse=1",
        "{j}"
    );
    let pairs = v["pairs"].as_u64().unwrap();
    assert!(
        pairs >= 5 && v["versus_faster_pairs"].as_u64().unwrap() <= pairs,
        "{j}"
    );
    let q = |k: &str| v[k].as_f64().unwrap();
    assert!(
        q("speedup_p25") > 0.0
            && q("speedup_p25") <= q("speedup_median")
            && q("speedup_median") <= q("speedup_p75"),
        "{j}"
    );
    assert!(
        q("sample_steps_per_s") > 0.0 && q("versus_sample_steps_per_s") > 0.0,
        "{j}"
    );
    assert!(run_err(lstm().args(["bench", "--versus", "fuse=2"])).contains("fuse"));
    let e = run_err(lstm().args(["bench", "--precision", "bf16", "--versus", "fuse=1"]));
    assert!(e.contains("--versus") && e.contains("bf16"), "{e}");
    assert!(
        run_err(lstm().args(["bench", "--streams", "4", "--versus", "fuse=1"]))
            .contains("--versus")
    );
}

/// A review's findings on plan files: a FIFO named by `LSTM_KERNELS_PLANS`
/// or `--plans` hung the process (and `tune --out /dev/stdout | cat` read
/// its own pipe forever); `tune --out` into a missing directory failed only
/// after tuning; tunes running at once into one file lost each other's
/// entries; an empty existing file was "not a plan file".
#[cfg(unix)]
#[test]
fn cli_plan_files_that_are_not_files_or_are_shared() {
    let limit = std::time::Duration::from_secs(60);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("ff");
    run_ok(Command::new("mkfifo").arg(&fifo));
    let shape = ["--batch", "2", "--input", "8", "--hidden", "8"];
    let mut env = lstm();
    env.arg("bench")
        .args(shape)
        .args(["--steps", "2", "--seconds", "0", "--json"])
        .env("LSTM_KERNELS_PLANS", &fifo);
    let out = finishes_within(&mut env, limit);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    let out = finishes_within(
        lstm()
            .arg("bench")
            .args(shape)
            .args(["--seconds", "0", "--plans"])
            .arg(&fifo),
        limit,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    // To a device: the plan is written there, nothing is read from it.
    let out = finishes_within(
        lstm()
            .arg("tune")
            .args(shape)
            .args(["--out", "/dev/stdout"]),
        limit,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("lstm-kernels plans v1\n"));
    // A missing directory: an error naming the path, nothing created.
    let missing = dir.path().join("no/such/dir/p.txt");
    let e = run_err(lstm().arg("tune").args(shape).arg("--out").arg(&missing));
    assert!(e.contains("no/such/dir/p.txt"), "{e}");
    // An empty file takes the plan.
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    run_ok(lstm().arg("tune").args(shape).arg("--out").arg(&empty));
    let text = std::fs::read_to_string(&empty).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("plan ")).count(),
        1,
        "{text}"
    );
    // Six tunes at once into one file: six entries.
    let shared = dir.path().join("shared.txt");
    let children: Vec<_> = (1..=6)
        .map(|n| {
            lstm()
                .args(["tune", "--batch", "1", "--hidden", "4", "--input"])
                .arg(n.to_string())
                .arg("--out")
                .arg(&shared)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let text = std::fs::read_to_string(&shared).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("plan ")).count(),
        6,
        "{text}"
    );
}

/// A closed stderr made the CLI panic (exit 101) where it prints an error
/// or a note; it now exits as it would have (1 for an error).
#[cfg(unix)]
#[test]
fn cli_a_closed_stderr_is_no_panic() {
    for args in [
        &["bench", "--steps", "0"][..],
        &["generate", "--length", "5"],
        &["codegen", "--shapes", "9y9"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = lstm()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(writer)
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(101), "{args:?} panicked");
    }
}

/// Runs `cmd` to completion within `limit`, or kills it and fails: a
/// bench that hangs fails its test instead of stopping the suite.
fn finishes_within(cmd: &mut Command, limit: std::time::Duration) -> std::process::Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A review's findings: with `--per-frame`, a client whose every frame
/// came back at its own submit parked with nothing to wake it (the bench
/// hung whenever a step was faster than the submits, e.g. one stream per
/// client); a think time longer than the run outlasted `--seconds`. Both
/// finish now, and report frames.
#[test]
fn cli_bench_streams_never_hangs() {
    let limit = std::time::Duration::from_secs(60);
    for extra in [
        &["--streams", "16", "--clients", "16", "--per-frame"][..],
        &[
            "--streams",
            "4",
            "--clients",
            "4",
            "--per-frame",
            "--catch-up",
        ],
        &[
            "--streams",
            "10",
            "--clients",
            "2",
            "--per-frame",
            "--max-wait-us",
            "0",
        ],
        &["--streams", "16", "--clients", "16"],
    ] {
        let out = finishes_within(
            lstm()
                .args(["bench", "--input", "4", "--hidden", "4", "--seconds", "0.2"])
                .args(["--json"])
                .args(extra),
            limit,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            v["frames_per_s"].as_f64().unwrap() > 0.0,
            "{extra:?}: {text}"
        );
    }
    // A 10 s think time in a 0.1 s window: the run ends with its window
    // (each of its 3 rounds), not after the clients' sleeps.
    let t0 = std::time::Instant::now();
    let out = finishes_within(
        lstm().args([
            "bench",
            "--streams",
            "5",
            "--clients",
            "1",
            "--input",
            "4",
            "--hidden",
            "4",
            "--seconds",
            "0.1",
            "--think-us",
            "10000000",
            "--json",
        ]),
        limit,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(8),
        "a 10 s think time outlasted a 0.1 s run: {:?}",
        t0.elapsed()
    );
}

/// A forcing variable that is not UTF-8 is an error naming it, not
/// silently the automatic choice (a review's finding).
#[test]
fn forcing_variables_that_are_not_utf8_are_errors() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"\xff");
    for (var, precision) in [
        ("LSTM_KERNELS_ISA", "f32"),
        ("LSTM_KERNELS_BF16", "bf16"),
        ("LSTM_KERNELS_INT8", "int8"),
    ] {
        let out = lstm()
            .env(var, bad)
            .args(["bench", "--batch", "2", "--input", "4", "--hidden", "4"])
            .args(["--seconds", "0", "--precision", precision])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}");
        let err = stderr(&out);
        assert!(err.contains(var) && err.contains("UTF-8"), "{var}: {err}");
    }
}

//! `lstm run`: weights, inputs and state from files, outputs to files.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use lstm_kernels::error::{Error, Result, checked_elements, shape_str, try_zeros};
use lstm_kernels::import::{self, TfOptions};
use lstm_kernels::io::{self, Staged};
use lstm_kernels::{Lstm, LstmWeights};

/// Weight file layouts `lstm run` reads.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// The seed exercise's names: w_i u_i b_i w_f u_f b_f w_c u_c b_c w_o u_o v_o b_o w_h b_h.
    Seed,
    /// A PyTorch nn.LSTM / nn.LSTMCell state dict: torch.save (.pt/.pth/.bin), .safetensors or .npz.
    Pytorch,
    /// A Keras model saved as .keras or legacy .h5 (its LSTM layers, batch-first
    /// as in Keras), or one LSTM layer's kernel, recurrent_kernel, bias in an
    /// .npz (then --default-activations is required).
    Keras,
    /// tf.compat.v1 LSTMCell variables (.npz): kernel, bias, w_*_diag, projection/kernel.
    Tf,
    /// An .onnx model: one LSTM node or a chain of them (torch.onnx.export,
    /// tf2onnx), external data next to it; its layout (time-major or
    /// batch-first) is read from the graph.
    Onnx,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Weights file (.npz, .safetensors, .onnx, .keras, .h5, or a torch.save .pt/.pth/.bin state dict).
    #[arg(long)]
    weights: PathBuf,
    /// Layout and names of the weights.
    #[arg(long, value_enum, default_value = "seed")]
    format: Format,
    /// Input .npy: float32 [T, B, n_in], or [B, n_in] for a single step.
    #[arg(long)]
    input: PathBuf,
    /// Output .npy: float32 [T, B, n_out] (or [B, n_out] for a 2-D input).
    #[arg(long)]
    output: PathBuf,
    /// Initial state .npz holding `c` and `m`: [B, H] for one cell, [L·D, B, H]
    /// for a sequence model (a one-cell model accepts [1, B, H] too) (default: zeros).
    #[arg(long)]
    state_in: Option<PathBuf>,
    /// Where to write the final state (.npz with `c` and `m`).
    #[arg(long)]
    state_out: Option<PathBuf>,
    /// Threads to spread the batch over (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Key prefix of the tensors (pytorch, keras, tf), e.g. `lstm.` (pytorch: `lstm` too).
    #[arg(long, default_value = "")]
    prefix: String,
    /// tf: LSTMCell's forget_bias (TF's default 1.0).
    #[arg(long, default_value_t = 1.0)]
    forget_bias: f32,
    /// tf: LSTMCell's cell_clip.
    #[arg(long)]
    cell_clip: Option<f32>,
    /// tf: LSTMCell's proj_clip.
    #[arg(long)]
    proj_clip: Option<f32>,
    /// Per-sequence lengths (.npy of B integers; PyTorch PackedSequence
    /// semantics: padded steps output zeros, the reverse direction starts
    /// at each sequence's end). Runs the model as a sequence model.
    #[arg(long)]
    seq_lens: Option<PathBuf>,
    /// Input and output are [B, T, ·] (batch-first). Runs the model as a
    /// sequence model. Not needed for ONNX models (their graph says).
    #[arg(long)]
    batch_first: bool,
    /// keras with an .npz: the layer used Keras' default activations
    /// (activation="tanh", recurrent_activation="sigmoid"), which an npz
    /// does not record (the engine runs no others).
    #[arg(long)]
    default_activations: bool,
    /// Accept NaN or infinite weights (by default the first one is an
    /// error naming the tensor and index).
    #[arg(long)]
    allow_non_finite_weights: bool,
    /// Arithmetic of the gate GEMM: f32, bf16 or int8 (see README). Default:
    /// f32, or int8 for an ONNX DynamicQuantizeLSTM (its own int8 weights;
    /// `--precision f32` runs them dequantized).
    #[arg(long)]
    precision: Option<lstm_kernels::Precision>,
}

fn load_options(args: &RunArgs) -> import::LoadOptions {
    import::LoadOptions::default().with_non_finite_weights(args.allow_non_finite_weights)
}

pub fn run(args: &RunArgs) -> Result<()> {
    check_outputs(args)?;
    if !matches!(args.format, Format::Tf)
        && (args.cell_clip.is_some() || args.proj_clip.is_some() || args.forget_bias != 1.0)
    {
        return Err(Error::Invalid(
            "--forget-bias, --cell-clip and --proj-clip are settings of --format tf".into(),
        ));
    }
    if args.default_activations && !matches!(args.format, Format::Keras) {
        return Err(Error::Invalid(
            "--default-activations is a setting of --format keras with an .npz".into(),
        ));
    }
    if !args.prefix.is_empty() && matches!(args.format, Format::Seed | Format::Onnx) {
        return Err(Error::Invalid(
            "--prefix is a setting of --format pytorch, tf, or keras with an .npz".into(),
        ));
    }
    tensorflow_save_formats(&args.weights)?;
    // A PyTorch state dict is read once (any tensor file: torch.save,
    // safetensors, npz), its prefix resolved (`lstm` or `lstm.`).
    let mut torch_file = None;
    if matches!(args.format, Format::Pytorch) {
        let file = io::read_tensors(&args.weights)?;
        let prefix = import::pytorch_prefix(&file, &args.prefix)?;
        if file.contains(&format!("{prefix}weight_ih_l0")) {
            // An nn.LSTM: more than one layer or direction, or sequence
            // options, make it a sequence model.
            let stack = import::pytorch_stack_from_with(&file, &prefix, load_options(args))?;
            let multi = stack.layers().len() > 1 || stack.layers()[0].backward.is_some();
            if multi || args.seq_lens.is_some() || args.batch_first {
                return run_stack(args, &stack, args.batch_first, None);
            }
        } else if args.seq_lens.is_some() || args.batch_first {
            return Err(Error::Invalid(
                "--seq-lens and --batch-first need an nn.LSTM state dict (weight_ih_l0, ...)"
                    .into(),
            ));
        }
        torch_file = Some((file, prefix));
    } else if matches!(args.format, Format::Keras) {
        let bytes = io::read_file_bytes(&args.weights)?;
        if import::is_keras_model(&bytes) {
            if args.default_activations {
                return Err(Error::Invalid(
                    "--default-activations is for an .npz of Keras weights; a .keras/.h5 file records its activations".into(),
                ));
            }
            let model =
                import::keras_model_from_bytes_with(&bytes, &args.weights, load_options(args))?;
            if !args.prefix.is_empty() {
                return Err(Error::Invalid(format!(
                    "{}: --prefix is a setting of an .npz of Keras weights; a whole Keras model has none",
                    args.weights.display()
                )));
            }
            for note in model.notes() {
                errln!("note: {}: {note}", args.weights.display());
            }
            return run_stack(args, model.stack(), false, Some(&model));
        }
        if !args.default_activations {
            return Err(Error::Invalid(format!(
                "{}: an .npz of Keras weights does not record the activations: pass --default-activations if the layer used tanh and sigmoid (Keras' defaults; no others run), or load the .keras/.h5 model; nothing was run",
                args.weights.display()
            )));
        }
        if args.seq_lens.is_some() || args.batch_first {
            let (cfg, w) = import::keras(&args.weights, &args.prefix)?;
            let cfg = cfg.with_non_finite_weights(args.allow_non_finite_weights);
            let layer = lstm_kernels::StackLayer {
                forward: Lstm::new(cfg, w)?,
                backward: None,
            };
            let stack = lstm_kernels::LstmStack::new(vec![layer], lstm_kernels::Merge::Concat)?;
            return run_stack(args, &stack, args.batch_first, None);
        }
    } else if matches!(args.format, Format::Onnx) {
        // The layout is the graph's: a contradicting --batch-first is an
        // error, an agreeing one is not needed.
        let model = import::onnx_model_with(&args.weights, load_options(args))?;
        if args.batch_first && !model.batch_first {
            return Err(Error::Invalid(format!(
                "--batch-first contradicts {}: its graph takes time-major input [T, B, n] (ONNX models are run in the layout their graph declares; drop --batch-first)",
                args.weights.display()
            )));
        }
        if args.batch_first {
            errln!(
                "note: --batch-first is not needed for ONNX models: the graph of {} is batch-first, and its layout is used",
                args.weights.display()
            );
        }
        let stack = &model.stack;
        // A DynamicQuantizeLSTM's cells carry their int8 weights: run them
        // as loaded.
        let quantized = stack.layers()[0].forward.precision() != lstm_kernels::Precision::F32;
        if stack.layers().len() > 1
            || stack.layers()[0].backward.is_some()
            || args.seq_lens.is_some()
            || model.batch_first
            || quantized
        {
            return run_stack(args, stack, model.batch_first, None);
        }
    } else if args.seq_lens.is_some() || args.batch_first {
        return Err(Error::Invalid(
            "--seq-lens and --batch-first need --format pytorch, onnx or keras (a sequence model)"
                .into(),
        ));
    }
    let (cfg, weights) = match args.format {
        Format::Seed => {
            let (cfg, seed) = io::load_seed_weights(&args.weights)?;
            (cfg, LstmWeights::from_seed(&cfg, &seed)?)
        }
        Format::Pytorch => match &torch_file {
            Some((file, prefix)) => import::pytorch_from(file, prefix)?,
            None => import::pytorch(&args.weights, &args.prefix)?,
        },
        Format::Keras => import::keras(&args.weights, &args.prefix)?,
        Format::Tf => {
            let opts = TfOptions {
                forget_bias: args.forget_bias,
                cell_clip: args.cell_clip,
                proj_clip: args.proj_clip,
            };
            import::tf(&args.weights, &args.prefix, opts)?
        }
        Format::Onnx => import::onnx(&args.weights)?,
    };
    let cfg = cfg.with_non_finite_weights(args.allow_non_finite_weights);
    let model = Lstm::new(cfg, weights)?
        .with_threads(args.threads)?
        .with_precision(args.precision.unwrap_or_default())?;
    let x = io::read_npy(&args.input)?;
    let (n, h, p) = (cfg.n_input, cfg.n_hidden, cfg.n_output());
    let (steps, batch, single) = match x.shape.as_slice() {
        [t, b, k] if *k == n => (*t, *b, false),
        [b, k] if *k == n => (1, *b, true),
        other => {
            return Err(Error::Shape {
                tensor: format!("input {}", args.input.display()),
                expected: format!("[T, B, {n}] or [B, {n}] (the weights have n_in = {n})"),
                got: shape_str(other),
            });
        }
    };
    if batch == 0 {
        return Err(Error::Invalid(format!(
            "input {} has batch size 0",
            args.input.display()
        )));
    }
    // A one-layer, one-direction model's state is [B, H]; the stack layout
    // [L·D, B, H] = [1, B, H] is accepted too, and --state-out then keeps it.
    let mut stack_layout = false;
    let mut state = match &args.state_in {
        Some(path) => {
            let f = io::read_tensors(path)?;
            // Shapes from the headers first: nothing of a wrong size is read.
            for (name, w) in [("c", h), ("m", cfg.n_recurrent())] {
                let got = f.shape(name)?;
                if got == [1, batch, w] {
                    stack_layout = true;
                } else if got != [batch, w] {
                    return Err(Error::Shape {
                        tensor: format!("{name} in {}", path.display()),
                        expected: shape_str(&[batch, w]),
                        got: shape_str(got),
                    });
                }
            }
            let (c, m) = (f.get("c")?, f.get("m")?);
            model.state_from(batch, &c.data, &m.data)?
        }
        None => model.new_state(batch)?,
    };
    let mut y = try_zeros(
        checked_elements(&[steps, batch, p], "the output")?,
        "the output",
    )?;
    model.forward(&mut state, &x.data, &mut y)?;
    let y_shape: Vec<usize> = if single {
        vec![batch, p]
    } else {
        vec![steps, batch, p]
    };
    // Stage every output before renaming any into place.
    let y_bytes = io::npy_file_bytes(&y_shape, &y)?;
    let staged_y = Staged::write(&args.output, |w| write_all(w, &y_bytes, &args.output))?;
    let staged_state = match &args.state_out {
        Some(path) => {
            let (hs, rs) = (vec![batch, h], vec![batch, cfg.n_recurrent()]);
            let lead = |s: Vec<usize>| {
                if stack_layout {
                    [&[1][..], &s].concat()
                } else {
                    s
                }
            };
            let (hs, rs) = (lead(hs), lead(rs));
            let bytes =
                io::tensor_file_bytes(path, &[("c", &hs, state.c()), ("m", &rs, state.m())])?;
            Some(Staged::write(path, |w| write_all(w, &bytes, path))?)
        }
        None => None,
    };
    // One rename after the other: a failure of the second names the file
    // the first already replaced.
    io::commit_all(std::iter::once(staged_y).chain(staged_state).collect())
}

/// Before anything runs or is written: `--output` is an `.npy` file (or
/// has no extension, like `/dev/stdout`); the state file's extension names
/// its format (`.npz` or `.safetensors`); no output lands on the other or
/// on an input (`io::same_file`: resolved destinations, dangling links
/// followed, and inodes, for hard links); and every destination can be
/// replaced (`io::check_replaceable`), so that a rename failing after
/// another succeeded is as unlikely as it can be made.
fn check_outputs(args: &RunArgs) -> Result<()> {
    if let Some(ext) = args.output.extension()
        && ext != "npy"
    {
        return Err(Error::Invalid(format!(
            "--output {}: an .npy file is written; name it .npy (or give no extension)",
            args.output.display()
        )));
    }
    if let Some(state) = &args.state_out {
        io::tensor_format(state).map_err(|e| Error::Invalid(format!("--state-out {e}")))?;
    }
    let outputs: Vec<(&str, &Path)> = std::iter::once(("--output", args.output.as_path()))
        .chain(args.state_out.as_deref().map(|s| ("--state-out", s)))
        .collect();
    let inputs: Vec<(&str, &Path)> = [
        ("--weights", Some(args.weights.as_path())),
        ("--input", Some(args.input.as_path())),
        ("--state-in", args.state_in.as_deref()),
        ("--seq-lens", args.seq_lens.as_deref()),
    ]
    .into_iter()
    .filter_map(|(flag, p)| Some((flag, p?)))
    .collect();
    if let [(_, y), (_, s)] = outputs[..]
        && io::same_file(y, s)
    {
        return Err(Error::Invalid(format!(
            "--output {} and --state-out {} are the same file",
            y.display(),
            s.display()
        )));
    }
    for &(out_flag, out) in &outputs {
        for &(in_flag, input) in &inputs {
            if io::same_file(out, input) {
                return Err(Error::Invalid(format!(
                    "{out_flag} {} and {in_flag} {} are the same file (the output would replace the input)",
                    out.display(),
                    input.display()
                )));
            }
        }
    }
    for (_, out) in outputs {
        io::check_replaceable(out)?;
    }
    Ok(())
}

/// TensorFlow's own saved forms (a SavedModel directory or its
/// `saved_model.pb`, a checkpoint's `.index`/`.data-*`/`checkpoint` files)
/// cannot be read: say what to do instead of failing on their bytes.
fn tensorflow_save_formats(weights: &std::path::Path) -> Result<()> {
    let name = weights
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let saved_model = weights.join("saved_model.pb").is_file() || name == "saved_model.pb";
    let checkpoint = name == "checkpoint"
        || name.ends_with(".index")
        || name.contains(".data-0")
        || (weights.is_dir() && weights.join("checkpoint").is_file());
    let what = if saved_model {
        "a TensorFlow SavedModel"
    } else if checkpoint {
        "a TensorFlow checkpoint"
    } else {
        return Ok(());
    };
    Err(Error::Unsupported(format!(
        "{}: {what} cannot be read; in Python, load the model and save it as Keras does (model.save(\"m.keras\"), then --format keras --weights m.keras), or export it to ONNX (tf2onnx; --format onnx); nothing was run",
        weights.display()
    )))
}

fn write_all(w: &mut dyn std::io::Write, bytes: &[u8], path: &std::path::Path) -> Result<()> {
    w.write_all(bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A sequence model (PyTorch nn.LSTM, ONNX LSTM nodes, a Keras model): X
/// is [T, B, n] ([B, T, n] when `batch_first`: --batch-first, the ONNX
/// graph's layout, or a Keras model unless it is time-major), Y
/// [T, B, D·P] ([B, T, D·P]; [B, D·P] for a Keras model whose last LSTM
/// does not return sequences); state files hold c [L·D, B, H] and
/// m (= h) [L·D, B, R].
fn run_stack(
    args: &RunArgs,
    stack: &lstm_kernels::LstmStack,
    batch_first: bool,
    keras: Option<&import::KerasModel>,
) -> Result<()> {
    use lstm_kernels::SeqOptions;
    let batch_first = match keras {
        Some(k) if args.batch_first && !k.batch_first() => {
            return Err(Error::Invalid(format!(
                "--batch-first: {} is a time-major (time_major=True) Keras model",
                args.weights.display()
            )));
        }
        Some(k) => k.batch_first(),
        None => batch_first,
    };
    // One pool for every layer (a deep stack built a pool per cell).
    let stack = stack.clone().with_threads(args.threads)?;
    // Without --precision a model runs as loaded (f32, or a
    // DynamicQuantizeLSTM's int8 weights as they are).
    let stack = match args.precision {
        Some(p) => stack.with_precision(p)?,
        None => stack,
    };
    let keras = match keras {
        Some(k) => Some(k.clone().map_stack(|_| Ok(stack.clone()))?),
        None => None,
    };
    let dirs = if stack.layers()[0].backward.is_some() {
        2
    } else {
        1
    };
    let ld = stack.layers().len() * dirs;
    let (h, r) = {
        let c = stack.layers()[0].forward.config();
        (c.n_hidden, c.n_recurrent())
    };
    // State files hold one [L·D, B, H] array: layers of one size and
    // direction count.
    let sizes: Vec<(usize, usize, usize)> = stack
        .layers()
        .iter()
        .map(|l| {
            let c = l.forward.config();
            (
                c.n_hidden,
                c.n_recurrent(),
                1 + l.backward.is_some() as usize,
            )
        })
        .collect();
    if sizes.iter().any(|&s| s != (h, r, dirs))
        && (args.state_in.is_some() || args.state_out.is_some())
    {
        return Err(Error::Unsupported(format!(
            "--state-in/--state-out hold [L·D, B, H] arrays, for stacks whose layers share one size; the layers of {} have (hidden, recurrent, directions) {sizes:?}",
            args.weights.display()
        )));
    }
    let x = io::read_npy(&args.input)?;
    let n = stack.input_size();
    let (t, b) = match (x.shape.as_slice(), batch_first) {
        ([t, b, k], false) if *k == n => (*t, *b),
        ([b, t, k], true) if *k == n => (*t, *b),
        (other, bf) => {
            return Err(Error::Shape {
                tensor: format!("input {}", args.input.display()),
                expected: if bf {
                    format!("[B, T, {n}]")
                } else {
                    format!("[T, B, {n}]")
                },
                got: shape_str(other),
            });
        }
    };
    if b == 0 {
        return Err(Error::Invalid(format!(
            "input {} has batch size 0",
            args.input.display()
        )));
    }
    let lens = args
        .seq_lens
        .as_ref()
        .map(io::read_npy_lengths)
        .transpose()?;
    let mut st = stack.new_state(b)?;
    if let Some(path) = &args.state_in {
        let f = io::read_tensors(path)?;
        // Shapes from the headers first: nothing of a wrong size is read.
        for (name, wdt) in [("c", h), ("m", r)] {
            let got = f.shape(name)?;
            if got != [ld, b, wdt] {
                return Err(Error::Shape {
                    tensor: format!("{name} in {}", path.display()),
                    expected: shape_str(&[ld, b, wdt]),
                    got: shape_str(got),
                });
            }
        }
        let (c, m) = (f.get("c")?, f.get("m")?);
        for k in 0..stack.layers().len() {
            let (f_st, b_st) = st.layer_mut(k).expect("layer exists");
            for (d, s) in std::iter::once(f_st).chain(b_st).enumerate() {
                let l = k * dirs + d;
                s.c_mut()
                    .copy_from_slice(&c.data[l * b * h..(l + 1) * b * h]);
                s.m_mut()
                    .copy_from_slice(&m.data[l * b * r..(l + 1) * b * r]);
            }
        }
    }
    let w = stack.output_size();
    let y_shape: Vec<usize> = match &keras {
        Some(k) if !k.return_sequences() => vec![b, w],
        _ if batch_first => vec![b, t, w],
        _ => vec![t, b, w],
    };
    let mut y = try_zeros(checked_elements(&y_shape, "the output")?, "the output")?;
    match &keras {
        Some(k) => k.forward(&mut st, &x.data, &mut y, lens.as_deref())?,
        None => stack.forward(
            &mut st,
            &x.data,
            &mut y,
            SeqOptions {
                batch_first,
                seq_lens: lens.as_deref(),
            },
        )?,
    }
    let y_bytes = io::npy_file_bytes(&y_shape, &y)?;
    let staged_y = Staged::write(&args.output, |wr| write_all(wr, &y_bytes, &args.output))?;
    let staged_state = match &args.state_out {
        Some(path) => {
            let (mut cs, mut ms) = (Vec::new(), Vec::new());
            for k in 0..stack.layers().len() {
                let (f_st, b_st) = st.layer(k).expect("layer exists");
                for s in std::iter::once(f_st).chain(b_st) {
                    cs.extend_from_slice(s.c());
                    ms.extend_from_slice(s.m());
                }
            }
            let bytes =
                io::tensor_file_bytes(path, &[("c", &[ld, b, h], &cs), ("m", &[ld, b, r], &ms)])?;
            Some(Staged::write(path, |wr| write_all(wr, &bytes, path))?)
        }
        None => None,
    };
    // One rename after the other: a failure of the second names the file
    // the first already replaced.
    io::commit_all(std::iter::once(staged_y).chain(staged_state).collect())
}

//! PyTorch `nn.LSTM` / `nn.LSTMCell` state dicts: `weight_ih`, `weight_hh`
//! (transposed into our layout), `bias_ih + bias_hh`, `weight_hr` for
//! `proj_size`; every layer and direction, or layer 0 alone. From any
//! tensor file [`read_tensors`] reads: `torch.save` files (`.pt`, `.pth`,
//! `.bin`, zip or legacy), `.safetensors`, `.npz`; float32, float64,
//! float16 or bfloat16 weights. Only the LSTM's own tensors are read;
//! the rest of the state dict (other modules, int64 counters) is ignored.

use std::path::Path;

use super::{LoadOptions, build_cell, dims2, expect, fill_gates, optional, shape_err};
use crate::config::LstmConfig;
use crate::error::{Error, Result};
use crate::io::{TensorFile, read_tensors};
use crate::weights::LstmWeights;

/// Loads a PyTorch `nn.LSTM` (layer 0, unidirectional) or `nn.LSTMCell`
/// state dict from a `torch.save` file (`.pt`, `.pth`, `.bin`),
/// `.safetensors` or `.npz`, keys optionally behind `prefix` (`lstm.`;
/// `lstm` works too). For more layers or both directions use
/// [`pytorch_stack`].
pub fn pytorch(path: impl AsRef<Path>, prefix: &str) -> Result<(LstmConfig, LstmWeights)> {
    pytorch_from(&read_tensors(path)?, prefix)
}

/// [`pytorch`] from the bytes of a state dict file (any format
/// [`read_tensors_from_bytes`](crate::io::read_tensors_from_bytes)
/// reads); `name` names them in messages.
pub fn pytorch_from_bytes(
    bytes: &[u8],
    name: impl AsRef<Path>,
    prefix: &str,
) -> Result<(LstmConfig, LstmWeights)> {
    pytorch_from(&crate::io::read_tensors_from_bytes(bytes, name)?, prefix)
}

/// [`pytorch_stack`] from the bytes of a state dict file; `name` names
/// them in messages.
pub fn pytorch_stack_from_bytes(
    bytes: &[u8],
    name: impl AsRef<Path>,
    prefix: &str,
) -> Result<crate::LstmStack> {
    pytorch_stack_from(&crate::io::read_tensors_from_bytes(bytes, name)?, prefix)
}

/// The key prefix under which `file` holds an `nn.LSTM` (`weight_ih_l0`)
/// or `nn.LSTMCell` (`weight_ih`): `prefix` itself, or `prefix` with a `.`
/// added (so `lstm` and `lstm.` both work). If neither has one, an
/// [`Error::MissingTensor`] whose message lists the keys that would match
/// and the prefix they suggest (`lstm.weight_ih_l0` → `--prefix lstm.`).
pub fn pytorch_prefix(file: &TensorFile, prefix: &str) -> Result<String> {
    let has = |p: &str| {
        file.contains(&format!("{p}weight_ih_l0")) || file.contains(&format!("{p}weight_ih"))
    };
    if has(prefix) {
        return Ok(prefix.to_string());
    }
    let dotted = format!("{prefix}.");
    if !prefix.is_empty() && !prefix.ends_with('.') && has(&dotted) {
        return Ok(dotted);
    }
    let found: Vec<(&str, &str)> = file
        .names()
        .filter_map(|k| {
            let p = k
                .strip_suffix("weight_ih_l0")
                .or_else(|| k.strip_suffix("weight_ih"))?;
            (p.is_empty() || p.ends_with('.')).then_some((k, p))
        })
        .take(4)
        .collect();
    let hint = match found.as_slice() {
        [] => format!(
            " (no key ends in weight_ih_l0 (nn.LSTM) or weight_ih (nn.LSTMCell); it has {} tensors{})",
            file.len(),
            file.names()
                .next()
                .map_or(String::new(), |k| format!(", e.g. `{k}`"))
        ),
        keys => {
            let list: Vec<String> = keys.iter().map(|(k, _)| format!("`{k}`")).collect();
            let p = keys[0].1;
            let flag = if p.is_empty() {
                "an empty prefix (--prefix '')".to_string()
            } else {
                format!("the prefix `{p}` (--prefix {p})")
            };
            format!(" (it has {}: did you mean {flag}?)", list.join(", "))
        }
    };
    Err(Error::MissingTensor {
        tensor: format!("{prefix}weight_ih_l0"),
        source_name: format!("{}{hint}", file.path().display()),
    })
}

/// [`pytorch`] from tensors already read.
pub fn pytorch_from(file: &TensorFile, prefix: &str) -> Result<(LstmConfig, LstmWeights)> {
    let prefix = pytorch_prefix(file, prefix)?;
    let prefix = prefix.as_str();
    // nn.LSTM names its tensors `..._l0`; nn.LSTMCell has no suffix.
    let suffix = if file.contains(&format!("{prefix}weight_ih_l0")) {
        "_l0"
    } else {
        ""
    };
    let (cfg, w, used) = pytorch_cell(file, prefix, suffix)?;
    // Other layers or directions: refuse instead of silently running layer 0.
    if let Some(k) = file
        .names()
        .find(|k| !used.iter().any(|u| u == k) && k.strip_prefix(prefix).is_some_and(is_lstm_param))
    {
        return Err(Error::Unsupported(format!(
            "{}: `{k}`: this loads layer 0, forward direction, only; use pytorch_stack (lstm run handles it)",
            file.path().display()
        )));
    }
    Ok((cfg, w))
}

/// Loads every layer and direction of a PyTorch `nn.LSTM` state dict
/// (`weight_ih_l{k}`, `..._l{k}_reverse`, `weight_hr_l{k}` with
/// `proj_size`) as an [`LstmStack`](crate::LstmStack) with PyTorch's
/// concatenation of directions.
pub fn pytorch_stack(path: impl AsRef<Path>, prefix: &str) -> Result<crate::LstmStack> {
    pytorch_stack_from(&read_tensors(path)?, prefix)
}

/// [`pytorch_stack`] from tensors already read (other keys are left to
/// the caller).
pub fn pytorch_stack_from(file: &TensorFile, prefix: &str) -> Result<crate::LstmStack> {
    pytorch_stack_from_with(file, prefix, LoadOptions::default())
}

/// [`pytorch_stack_from`] with [`LoadOptions`].
pub fn pytorch_stack_from_with(
    file: &TensorFile,
    prefix: &str,
    opts: LoadOptions,
) -> Result<crate::LstmStack> {
    let prefix = pytorch_prefix(file, prefix)?;
    let prefix = prefix.as_str();
    let mut layers = Vec::new();
    let mut used = Vec::new();
    for k in 0.. {
        let suffix = format!("_l{k}");
        if !file.contains(&format!("{prefix}weight_ih{suffix}")) {
            if k == 0 {
                return Err(Error::MissingTensor {
                    tensor: format!("{prefix}weight_ih_l0"),
                    source_name: format!(
                        "{} (it has `{prefix}weight_ih`: an nn.LSTMCell, which pytorch() loads)",
                        file.path().display()
                    ),
                });
            }
            break;
        }
        let (cfg, w, u) = pytorch_cell(file, prefix, &suffix)?;
        used.extend(u);
        let forward = build_cell(cfg, w, opts, file.path(), &format!("layer {k}"))?;
        let rev = format!("{suffix}_reverse");
        let backward = if file.contains(&format!("{prefix}weight_ih{rev}")) {
            let (cfg, w, u) = pytorch_cell(file, prefix, &rev)?;
            used.extend(u);
            Some(build_cell(
                cfg,
                w,
                opts,
                file.path(),
                &format!("layer {k} reverse"),
            )?)
        } else {
            None
        };
        layers.push(crate::StackLayer { forward, backward });
    }
    // An LSTM parameter the layers found did not use (a gap in the layer
    // numbers, a stray direction) would silently change the model; other
    // keys (other modules, counters) are not the LSTM's and are ignored.
    if let Some(k) = file
        .names()
        .find(|k| !used.iter().any(|u| u == k) && k.strip_prefix(prefix).is_some_and(is_lstm_param))
    {
        return Err(Error::UnexpectedTensor {
            tensor: k.to_string(),
            why: format!(
                "not part of the nn.LSTM layers found in {}",
                file.path().display()
            ),
        });
    }
    if layers.iter().any(|l| l.backward.is_some()) != layers.iter().all(|l| l.backward.is_some()) {
        return Err(Error::Config(format!(
            "{}: some layers have a reverse direction and some do not",
            file.path().display()
        )));
    }
    crate::LstmStack::new(layers, crate::Merge::Concat)
}

/// Whether a key (after the prefix) names an `nn.LSTM` parameter.
fn is_lstm_param(k: &str) -> bool {
    !k.contains('.')
        && ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"]
            .iter()
            .any(|p| k.starts_with(p))
}

/// One cell (`suffix` = `_l{k}`, `_l{k}_reverse` or empty) of a PyTorch
/// state dict; returns the keys it used.
fn pytorch_cell(
    file: &TensorFile,
    prefix: &str,
    suffix: &str,
) -> Result<(LstmConfig, LstmWeights, Vec<String>)> {
    let _nearest = crate::engine::NearestGuard::new(); // bias sums round to nearest
    let key = |n: &str| format!("{prefix}{n}{suffix}");
    let (w_ih, w_hh) = (file.get(&key("weight_ih"))?, file.get(&key("weight_hh"))?);
    let (g4, n) = dims2(file, &key("weight_ih"), w_ih)?;
    if g4 % 4 != 0 || g4 == 0 {
        return Err(shape_err(
            file,
            &key("weight_ih"),
            "[4·hidden, input]".into(),
            &w_ih.shape,
        ));
    }
    let h = g4 / 4;
    let w_hr = optional(file, &key("weight_hr"))?;
    let r = match w_hr {
        Some(t) => {
            let (r, _) = dims2(file, &key("weight_hr"), t)?;
            expect(file, &key("weight_hr"), t, &[r, h])?;
            r
        }
        None => h,
    };
    expect(file, &key("weight_hh"), w_hh, &[4 * h, r])?;
    let mut cfg = LstmConfig::new(n, h);
    if w_hr.is_some() {
        cfg = cfg.with_projection(r);
    }
    cfg.validate()?;
    let mut w = LstmWeights::zeros(&cfg)?;
    let cols = 4 * h;
    // Same gate order (i, f, g, o); transpose [4H, k] → [k, 4H].
    fill_gates(&mut w, cols, h, 0, n, |k, g, j| {
        w_ih.data[(g * h + j) * n + k]
    });
    fill_gates(&mut w, cols, h, n, r, |k, g, j| {
        w_hh.data[(g * h + j) * r + k]
    });
    let mut used = vec![key("weight_ih"), key("weight_hh")];
    for b in ["bias_ih", "bias_hh"] {
        if let Some(t) = optional(file, &key(b))? {
            expect(file, &key(b), t, &[4 * h])?;
            for (acc, v) in w.bias.iter_mut().zip(&t.data) {
                *acc += v;
            }
            used.push(key(b));
        }
    }
    if let (Some(t), Some(wp)) = (w_hr, w.w_p.as_mut()) {
        // weight_hr is [R, H]; w_p is [H, R].
        for i in 0..h {
            for k in 0..r {
                wp[i * r + k] = t.data[k * h + i];
            }
        }
        used.push(key("weight_hr"));
    }
    Ok((cfg, w, used))
}

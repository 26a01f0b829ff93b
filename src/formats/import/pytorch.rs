//! PyTorch `nn.LSTM` / `nn.LSTMCell` state dicts: `weight_ih`, `weight_hh`
//! (transposed into our layout), `bias_ih + bias_hh`, `weight_hr` for
//! `proj_size`; every layer and direction, or layer 0 alone.

use std::path::Path;

use super::{LoadOptions, build_cell, dims2, expect, fill_gates, optional, shape_err};
use crate::config::LstmConfig;
use crate::error::{Error, Result};
use crate::io::{TensorFile, read_tensors};
use crate::weights::LstmWeights;

/// Loads a PyTorch `nn.LSTM` (layer 0, unidirectional) or `nn.LSTMCell`
/// state dict from `.safetensors` (or `.npz`), keys optionally behind
/// `prefix` (e.g. `lstm.`). For more layers or both directions use
/// [`pytorch_stack`].
pub fn pytorch(path: impl AsRef<Path>, prefix: &str) -> Result<(LstmConfig, LstmWeights)> {
    let file = read_tensors(path)?;
    // nn.LSTM names its tensors `..._l0`; nn.LSTMCell has no suffix.
    let suffix = if file.contains(&format!("{prefix}weight_ih_l0")) {
        "_l0"
    } else {
        ""
    };
    let (cfg, w, used) = pytorch_cell(&file, prefix, suffix)?;
    // Other layers or directions: refuse instead of silently running layer 0.
    if let Some(k) = file.names().find(|k| {
        !used.iter().any(|u| u == k)
            && k.starts_with(prefix)
            && (k.contains("_l1") || k.contains("_reverse"))
    }) {
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

/// [`pytorch_stack`] from tensors already read (other keys, outside
/// `prefix`, are left to the caller).
pub fn pytorch_stack_from(file: &TensorFile, prefix: &str) -> Result<crate::LstmStack> {
    pytorch_stack_from_with(file, prefix, LoadOptions::default())
}

/// [`pytorch_stack_from`] with [`LoadOptions`].
pub fn pytorch_stack_from_with(
    file: &TensorFile,
    prefix: &str,
    opts: LoadOptions,
) -> Result<crate::LstmStack> {
    let mut layers = Vec::new();
    let mut used = Vec::new();
    for k in 0.. {
        let suffix = format!("_l{k}");
        if !file.contains(&format!("{prefix}weight_ih{suffix}")) {
            if k == 0 {
                return Err(Error::MissingTensor {
                    tensor: format!("{prefix}weight_ih_l0"),
                    source_name: file.path().display().to_string(),
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
    if let Some(k) = file
        .names()
        .find(|k| !used.iter().any(|u| u == k) && k.starts_with(prefix))
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

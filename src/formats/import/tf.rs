//! `tf.compat.v1` `LSTMCell` variables from `.npz` (gate order i, j, f, o
//! reordered; diagonal peepholes and projection when present), with the
//! cell's non-weight settings ([`TfOptions`]) carried into the config.

use std::path::Path;

use super::{dims2, expect, fill_gates, no_leftovers, optional, shape_err};
use crate::config::{LstmConfig, Peephole};
use crate::error::{Error, Result};
use crate::io::{TensorFile, read_tensors};
use crate::weights::LstmWeights;

/// The `tf.compat.v1.nn.rnn_cell.LSTMCell` settings that are not weights.
#[derive(Clone, Copy, Debug)]
pub struct TfOptions {
    /// `forget_bias` (TF's default: 1.0).
    pub forget_bias: f32,
    /// `cell_clip`.
    pub cell_clip: Option<f32>,
    /// `proj_clip`.
    pub proj_clip: Option<f32>,
}

impl Default for TfOptions {
    fn default() -> Self {
        TfOptions {
            forget_bias: 1.0,
            cell_clip: None,
            proj_clip: None,
        }
    }
}

/// Loads `tf.compat.v1` `LSTMCell` variables from `.npz`: `kernel`,
/// `bias`, optional `w_i_diag w_f_diag w_o_diag` (all three: peepholes)
/// and `projection/kernel` (names may carry a scope prefix, e.g.
/// `rnn/lstm_cell/`).
pub fn tf(
    path: impl AsRef<Path>,
    prefix: &str,
    opts: TfOptions,
) -> Result<(LstmConfig, LstmWeights)> {
    tf_from(&read_tensors(path)?, prefix, opts)
}

/// [`tf`] from the bytes of an `.npz` (`name` names it in errors).
pub fn tf_from_bytes(
    bytes: &[u8],
    name: impl AsRef<Path>,
    prefix: &str,
    opts: TfOptions,
) -> Result<(LstmConfig, LstmWeights)> {
    tf_from(
        &crate::io::read_tensors_from_bytes(bytes, name)?,
        prefix,
        opts,
    )
}

/// [`tf`] from tensors already read.
pub fn tf_from(
    file: &TensorFile,
    prefix: &str,
    opts: TfOptions,
) -> Result<(LstmConfig, LstmWeights)> {
    let _nearest = crate::engine::NearestGuard::new(); // bias sums round to nearest
    let key = |n: &str| format!("{prefix}{n}");
    let (k, b) = (file.get(&key("kernel"))?, file.get(&key("bias"))?);
    let (rows, g4) = dims2(file, &key("kernel"), k)?;
    if g4 % 4 != 0 || g4 == 0 {
        return Err(shape_err(
            file,
            &key("kernel"),
            "[input + recurrent, 4·units]".into(),
            &k.shape,
        ));
    }
    let h = g4 / 4;
    expect(file, &key("bias"), b, &[4 * h])?;
    let proj = optional(file, &key("projection/kernel"))?;
    let r = match proj {
        Some(p) => {
            let (ph, pr) = dims2(file, &key("projection/kernel"), p)?;
            expect(file, &key("projection/kernel"), p, &[h, pr])?;
            let _ = ph;
            pr
        }
        None => h,
    };
    if rows <= r {
        return Err(shape_err(
            file,
            &key("kernel"),
            format!("[input + {r}, {g4}] with input ≥ 1"),
            &k.shape,
        ));
    }
    let n = rows - r;
    let mut cfg = LstmConfig::new(n, h).with_forget_bias(opts.forget_bias);
    if proj.is_some() {
        cfg = cfg.with_projection(r);
    }
    if let Some(c) = opts.cell_clip {
        cfg = cfg.with_cell_clip(c);
    }
    if let Some(c) = opts.proj_clip {
        cfg = cfg.with_proj_clip(c);
    }
    let diag_names = ["w_i_diag", "w_f_diag", "w_o_diag"].map(key);
    let diag_present = diag_names.iter().filter(|n| file.contains(n)).count();
    if diag_present == 3 {
        cfg = cfg.with_peephole(Peephole::Diagonal);
    } else if diag_present > 0 {
        let missing = diag_names
            .iter()
            .find(|n| !file.contains(n))
            .expect("one is missing");
        return Err(Error::MissingTensor {
            tensor: missing.clone(),
            source_name: format!(
                "{} (peepholes need all three diagonals)",
                file.path().display()
            ),
        });
    }
    cfg.validate()?;
    let mut w = LstmWeights::zeros(&cfg)?;
    // TF's gate order is i, j (= c̃), f, o; ours i, f, c̃, o.
    const TF_GATE: [usize; 4] = [0, 2, 1, 3];
    fill_gates(&mut w, 4 * h, h, 0, rows, |row, g, j| {
        k.data[row * 4 * h + TF_GATE[g] * h + j]
    });
    for (g, &tg) in TF_GATE.iter().enumerate() {
        w.bias[g * h..(g + 1) * h].copy_from_slice(&b.data[tg * h..(tg + 1) * h]);
    }

    let mut used = vec![key("kernel"), key("bias")];
    if let Some(d) = w.peep_diag.as_mut() {
        // Ours: [w_ci, w_cf, w_co].
        for (g, name) in diag_names.iter().enumerate() {
            let t = file.get(name)?;
            expect(file, name, t, &[h])?;
            d[g * h..(g + 1) * h].copy_from_slice(&t.data);
            used.push(name.clone());
        }
    }
    if let (Some(p), Some(wp)) = (proj, w.w_p.as_mut()) {
        wp.copy_from_slice(&p.data);
        used.push(key("projection/kernel"));
    }
    no_leftovers(file, prefix, &used, "TF LSTMCell")?;
    Ok((cfg, w))
}

//! Keras `LSTM` layer weights from `.npz`: the same gate order and
//! orientation as ours, so a checked copy; unknown keys are rejected.

use std::path::Path;

use super::{dims2, expect, no_leftovers, optional, shape_err};
use crate::config::LstmConfig;
use crate::error::Result;
use crate::io::{TensorFile, read_tensors};
use crate::weights::LstmWeights;

/// Loads a Keras `LSTM` layer's weights from `.npz` (`kernel`,
/// `recurrent_kernel`, `bias`; an optional key prefix).
pub fn keras(path: impl AsRef<Path>, prefix: &str) -> Result<(LstmConfig, LstmWeights)> {
    keras_from(&read_tensors(path)?, prefix)
}

/// [`keras`] from the bytes of an `.npz` (`name` names it in errors).
pub fn keras_from_bytes(
    bytes: &[u8],
    name: impl AsRef<Path>,
    prefix: &str,
) -> Result<(LstmConfig, LstmWeights)> {
    keras_from(&crate::io::read_tensors_from_bytes(bytes, name)?, prefix)
}

/// [`keras`] from tensors already read.
pub fn keras_from(file: &TensorFile, prefix: &str) -> Result<(LstmConfig, LstmWeights)> {
    let _nearest = crate::engine::NearestGuard::new(); // bias sums round to nearest
    let key = |n: &str| format!("{prefix}{n}");
    if !file.contains(&key("kernel")) {
        // Say which prefixes the file has (a Bidirectional layer's
        // directions, several layers).
        let found: Vec<String> = file
            .names()
            .filter_map(|k| k.strip_suffix("recurrent_kernel").map(str::to_string))
            .collect();
        if !found.is_empty() {
            return Err(crate::error::Error::MissingTensor {
                tensor: key("kernel"),
                source_name: format!(
                    "{} (it has the layers {}: choose one with --prefix)",
                    file.path().display(),
                    found
                        .iter()
                        .map(|p| format!("`{p}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    let (k, rk) = (
        file.get(&key("kernel"))?,
        file.get(&key("recurrent_kernel"))?,
    );
    let (n, g4) = dims2(file, &key("kernel"), k)?;
    if g4 % 4 != 0 || g4 == 0 {
        return Err(shape_err(
            file,
            &key("kernel"),
            "[input, 4·units]".into(),
            &k.shape,
        ));
    }
    let h = g4 / 4;
    expect(file, &key("recurrent_kernel"), rk, &[h, 4 * h])?;
    let cfg = LstmConfig::new(n, h);
    cfg.validate()?;
    let mut w = LstmWeights::zeros(&cfg)?;
    // Same gate order (i, f, c, o) and orientation: a plain copy.
    w.gates[..n * 4 * h].copy_from_slice(&k.data);
    w.gates[n * 4 * h..].copy_from_slice(&rk.data);
    let mut used = vec![key("kernel"), key("recurrent_kernel")];
    if let Some(b) = optional(file, &key("bias"))? {
        expect(file, &key("bias"), b, &[4 * h])?;
        w.bias.copy_from_slice(&b.data);
        used.push(key("bias"));
    }
    no_leftovers(file, prefix, &used, "Keras LSTM layer")?;
    Ok((cfg, w))
}

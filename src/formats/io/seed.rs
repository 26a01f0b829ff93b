//! The seed exercise's weight files: [`SeedWeights`]' per-gate names in
//! `.npz` or `.safetensors`, the config inferred from the shapes, every
//! shape checked and any other name rejected.

use std::path::Path;

use super::{read_tensors, write_tensors};
use crate::config::{LstmConfig, Peephole};
use crate::error::{Error, Result, check_shape, shape_str};
use crate::weights::{SEED_NAMES, SeedWeights};

/// Reads seed-format weights (`w_i u_i b_i … w_h b_h`, see
/// [`SeedWeights`]) and infers the config from their shapes: `n_in` and `H`
/// from `w_i`, the matrix peephole from the presence of `v_o`, the head from
/// `w_h`. Every tensor's shape is checked; an unknown name is an error.
pub fn load_seed_weights(path: impl AsRef<Path>) -> Result<(LstmConfig, SeedWeights)> {
    let mut file = read_tensors(path)?;
    // Nothing is read until every name and shape is checked; w_i's dtype
    // first (a non-float file fails here, naming it).
    file.check_float("w_i")?;
    let (n, h) = match file.shape("w_i")? {
        [n, h] => (*n, *h),
        other => {
            return Err(Error::Shape {
                tensor: "w_i".into(),
                expected: "[n_in, n_hidden]".into(),
                got: shape_str(other),
            });
        }
    };
    let mut cfg = LstmConfig::new(n, h);
    if file.contains("v_o") {
        cfg = cfg.with_peephole(Peephole::Matrix);
    }
    if file.contains("w_h") {
        match file.shape("w_h")? {
            [_, p] => cfg = cfg.with_head(*p),
            other => {
                return Err(Error::Shape {
                    tensor: "w_h".into(),
                    expected: format!("[{h}, n_output]"),
                    got: shape_str(other),
                });
            }
        }
    } else if file.contains("b_h") {
        return Err(Error::MissingTensor {
            tensor: "w_h".into(),
            source_name: format!("{} (it has b_h)", file.path().display()),
        });
    }
    cfg.validate()?;
    if let Some(extra) = file.names().find(|k| !SEED_NAMES.contains(k)) {
        return Err(Error::UnexpectedTensor {
            tensor: extra.to_string(),
            why: format!("not a seed-format name (expected {})", SEED_NAMES.join(" ")),
        });
    }
    let p = cfg.n_output();
    // Every shape is checked from the headers before any data is read.
    let mut take = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        check_shape(name, file.shape(name)?, shape)?;
        Ok(file.take(name)?.data)
    };
    let w = SeedWeights {
        w_i: take("w_i", &[n, h])?,
        u_i: take("u_i", &[h, h])?,
        b_i: take("b_i", &[h])?,
        w_f: take("w_f", &[n, h])?,
        u_f: take("u_f", &[h, h])?,
        b_f: take("b_f", &[h])?,
        w_c: take("w_c", &[n, h])?,
        u_c: take("u_c", &[h, h])?,
        b_c: take("b_c", &[h])?,
        w_o: take("w_o", &[n, h])?,
        u_o: take("u_o", &[h, h])?,
        b_o: take("b_o", &[h])?,
        v_o: match cfg.peephole {
            Peephole::Matrix => Some(take("v_o", &[h, h])?),
            _ => None,
        },
        w_h: cfg.head.map(|_| take("w_h", &[h, p])).transpose()?,
        b_h: cfg.head.map(|_| take("b_h", &[p])).transpose()?,
        w_ci: None,
        w_cf: None,
        w_co: None,
        w_p: None,
    };
    w.validate(&cfg)?;
    Ok((cfg, w))
}

/// Writes seed-format weights as `.npz` or `.safetensors` (by extension).
pub fn save_seed_weights(path: impl AsRef<Path>, cfg: &LstmConfig, w: &SeedWeights) -> Result<()> {
    w.validate(cfg)?;
    let (n, h, p) = (cfg.n_input, cfg.n_hidden, cfg.n_output());
    let (nh, hh, hv, hp, pv) = ([n, h], [h, h], [h], [h, p], [p]);
    let mut arrays: Vec<(&str, &[usize], &[f32])> = vec![
        ("w_i", &nh, &w.w_i),
        ("u_i", &hh, &w.u_i),
        ("b_i", &hv, &w.b_i),
        ("w_f", &nh, &w.w_f),
        ("u_f", &hh, &w.u_f),
        ("b_f", &hv, &w.b_f),
        ("w_c", &nh, &w.w_c),
        ("u_c", &hh, &w.u_c),
        ("b_c", &hv, &w.b_c),
        ("w_o", &nh, &w.w_o),
        ("u_o", &hh, &w.u_o),
        ("b_o", &hv, &w.b_o),
    ];
    if let Some(v) = &w.v_o {
        arrays.push(("v_o", &hh, v));
    }
    if let (Some(wh), Some(bh)) = (&w.w_h, &w.b_h) {
        arrays.push(("w_h", &hp, wh));
        arrays.push(("b_h", &pv, bh));
    }
    write_tensors(path, &arrays)
}

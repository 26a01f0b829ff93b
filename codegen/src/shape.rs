//! A specialized shape and the list grammar: `<n_in>x<hidden>[h<head>][p]`
//! (`p`: the seed's matrix peephole), comma separated; a list starting with
//! `only:` replaces the defaults.

use std::fmt;
use std::str::FromStr;

use crate::{DEFAULT_SHAPES, MAX_DIM};

/// One specialized shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub n_in: usize,
    pub hidden: usize,
    pub head: Option<usize>,
    pub peephole: bool,
}

/// The tag, as written in a list: `7x5h3p`.
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.n_in, self.hidden)?;
        if let Some(p) = self.head {
            write!(f, "h{p}")?;
        }
        if self.peephole {
            f.write_str("p")?;
        }
        Ok(())
    }
}

impl FromStr for Shape {
    type Err = String;

    /// Parses one `<n_in>x<hidden>[h<head>][p]`.
    fn from_str(s: &str) -> Result<Shape, String> {
        let bad = |why: &str| {
            format!(
                "bad shape `{s}`: {why} (expected <n_in>x<hidden>[h<head>][p], e.g. 7x5h3p or 256x256)"
            )
        };
        let (body, peephole) = match s.strip_suffix('p') {
            Some(b) => (b, true),
            None => (s, false),
        };
        let (dims, head) = match body.split_once('h') {
            Some((d, h)) => (d, Some(h)),
            None => (body, None),
        };
        let (n, h) = dims
            .split_once('x')
            .ok_or_else(|| bad("no `x` between n_in and hidden"))?;
        let num = |v: &str, what: &str| -> Result<usize, String> {
            let x: usize = v
                .parse()
                .map_err(|_| bad(&format!("{what} `{v}` is not a number")))?;
            if x == 0 || x > MAX_DIM {
                return Err(bad(&format!("{what} must be in 1..={MAX_DIM}")));
            }
            Ok(x)
        };
        let shape = Shape {
            n_in: num(n, "n_in")?,
            hidden: num(h, "hidden")?,
            head: head.map(|p| num(p, "head")).transpose()?,
            peephole,
        };
        if shape.head.is_some_and(|p| p > shape.hidden) {
            return Err(bad("head is larger than hidden"));
        }
        Ok(shape)
    }
}

/// The shapes to specialize: the defaults plus `extra` (the value of
/// `LSTM_KERNELS_SHAPES`), without duplicates, in order.
pub fn shape_list(extra: &str) -> Result<Vec<Shape>, String> {
    let extra = extra.trim();
    let (base, extra) = match extra.strip_prefix("only:") {
        Some(rest) => ("", rest),
        None => (DEFAULT_SHAPES, extra),
    };
    let mut out: Vec<Shape> = Vec::new();
    for item in base.split(',').chain(extra.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let s: Shape = item.parse()?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_grammar() {
        let s: Shape = "7x5h3p".parse().unwrap();
        assert_eq!(
            s,
            Shape {
                n_in: 7,
                hidden: 5,
                head: Some(3),
                peephole: true
            }
        );
        assert_eq!(s.to_string(), "7x5h3p");
        assert_eq!("40x128".parse::<Shape>().unwrap().to_string(), "40x128");
        assert_eq!("9x9p".parse::<Shape>().unwrap().head, None);
        for (bad, why) in [
            ("7", "no `x`"),
            ("x5", "n_in"),
            ("7x", "hidden"),
            ("7x5h", "head"),
            ("7x5h6", "larger"),
            ("0x5", "1..="),
            ("7x5q", "not a number"),
            ("7x5hp", "head"),
            ("7x65537", "1..="),
        ] {
            let e = bad.parse::<Shape>().unwrap_err();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn list_adds_to_defaults_and_only_replaces() {
        let d = shape_list("").unwrap();
        assert_eq!(d.len(), 6);
        let more = shape_list(" 40x128 , 7x5h3p,").unwrap();
        assert_eq!(more.len(), 7, "duplicates are dropped");
        assert_eq!(more[6].to_string(), "40x128");
        assert_eq!(shape_list("only:").unwrap().len(), 0);
        assert_eq!(
            shape_list("only:3x4").unwrap(),
            vec!["3x4".parse::<Shape>().unwrap()]
        );
        assert!(
            shape_list("7x5,bad")
                .unwrap_err()
                .contains("bad shape `bad`")
        );
    }
}

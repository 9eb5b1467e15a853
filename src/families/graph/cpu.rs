//! f64 references of GlycanAA's graph blocks: torchdrug's relational graph convolution (without
//! its batch norm and activation) and the segment readouts, forward and backward.

use crate::core::error::{Error, Result};
use crate::core::validate::check_host_matrix;

/// The operands of a relational graph convolution: out[i] = Σ_r U[i, r]·W_rᵀ + X[i]·W_selfᵀ + b,
/// U[i, r] = Σ_{e: dst_e = i, rel_e = r} w_e·X[src_e] / Σ_{same e} w_e (0 for an empty segment,
/// or one whose weights sum to 0).
#[derive(Clone, Copy, Debug)]
pub struct Rgcn<'a> {
    /// X `[N, C]`.
    pub x: &'a [f64],
    /// Sources `[E]` in 0..N.
    pub src: &'a [usize],
    /// Destinations `[E]` in 0..N.
    pub dst: &'a [usize],
    /// Relations `[E]` in 0..R.
    pub rel: &'a [usize],
    /// Edge weights w `[E]`.
    pub w: &'a [f64],
    /// The relations' Linear weight `[O, R·C]` (torch's layout: column r·C + c).
    pub wr: &'a [f64],
    /// The self loop's Linear weight `[O, C]`.
    pub wself: &'a [f64],
    /// The bias `[O]`.
    pub b: &'a [f64],
    /// N.
    pub nodes: usize,
    /// R.
    pub relations: usize,
    /// C.
    pub c: usize,
    /// O.
    pub o: usize,
}

impl Rgcn<'_> {
    fn check(&self) -> Result<usize> {
        let e = self.src.len();
        check_host_matrix("x", self.x, self.nodes, self.c)?;
        for (arg, len) in [("dst", self.dst.len()), ("rel", self.rel.len()), ("w", self.w.len())] {
            if len != e {
                return Err(Error::Shape { arg, expected: format!("[{e}] (one per edge)"), got: vec![len] });
            }
        }
        check_host_matrix("wr", self.wr, self.o, self.relations * self.c)?;
        check_host_matrix("wself", self.wself, self.o, self.c)?;
        check_host_matrix("b", self.b, 1, self.o)?;
        for (arg, idx, bound) in
            [("src", self.src, self.nodes), ("dst", self.dst, self.nodes), ("rel", self.rel, self.relations)]
        {
            if let Some(at) = idx.iter().position(|&v| v >= bound) {
                return Err(Error::InvalidValue {
                    arg,
                    reason: format!("edge {at} has index {}, outside 0..{bound}", idx[at]),
                });
            }
        }
        Ok(e)
    }

    /// The segments' weight sums deg `[N·R]` and the relation means U `[N, R·C]`.
    fn means(&self) -> (Vec<f64>, Vec<f64>) {
        let (r, c) = (self.relations, self.c);
        let mut deg = vec![0.0; self.nodes * r];
        let mut u = vec![0.0; self.nodes * r * c];
        for e in 0..self.src.len() {
            let seg = self.dst[e] * r + self.rel[e];
            deg[seg] += self.w[e];
            for k in 0..c {
                u[seg * c + k] += self.w[e] * self.x[self.src[e] * c + k];
            }
        }
        for (seg, &d) in deg.iter().enumerate() {
            for v in &mut u[seg * c..(seg + 1) * c] {
                *v = if d != 0.0 { *v / d } else { 0.0 };
            }
        }
        (deg, u)
    }
}

/// The relational graph convolution: `[N, O]`.
pub fn rgcn(p: &Rgcn) -> Result<Vec<f64>> {
    p.check()?;
    let (_, u) = p.means();
    let rc = p.relations * p.c;
    Ok((0..p.nodes * p.o)
        .map(|t| {
            let (i, o) = (t / p.o, t % p.o);
            let rel: f64 = p.wr[o * rc..(o + 1) * rc].iter().zip(&u[i * rc..(i + 1) * rc]).map(|(a, b)| a * b).sum();
            let own: f64 =
                p.wself[o * p.c..(o + 1) * p.c].iter().zip(&p.x[i * p.c..(i + 1) * p.c]).map(|(a, b)| a * b).sum();
            rel + own + p.b[o]
        })
        .collect())
}

/// The gradients of [`rgcn`], shaped as its inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct RgcnGrads {
    /// dX `[N, C]`: the self loop's term and (w_e / deg)·dU[dst_e, rel_e] at each source.
    pub dx: Vec<f64>,
    /// dW_r `[O, R·C]` = Σ_i dout_iᵀ·U[i].
    pub dwr: Vec<f64>,
    /// dW_self `[O, C]`.
    pub dwself: Vec<f64>,
    /// db `[O]`.
    pub db: Vec<f64>,
    /// dw `[E]` = ⟨dU[dst, rel], X[src] − U[dst, rel]⟩ / deg.
    pub dw: Vec<f64>,
}

/// The backward of [`rgcn`] given dout `[N, O]`.
pub fn rgcn_backward(p: &Rgcn, dout: &[f64]) -> Result<RgcnGrads> {
    let e_count = p.check()?;
    let (n, r, c, o_) = (p.nodes, p.relations, p.c, p.o);
    check_host_matrix("dout", dout, n, o_)?;
    let (deg, u) = p.means();
    let rc = r * c;
    let mut g = RgcnGrads {
        dx: vec![0.0; n * c],
        dwr: vec![0.0; o_ * rc],
        dwself: vec![0.0; o_ * c],
        db: vec![0.0; o_],
        dw: vec![0.0; e_count],
    };
    // dU[i, r·C + c] = Σ_o dout[i, o]·W_r[o, r·C + c].
    let mut du = vec![0.0; n * rc];
    for i in 0..n {
        for o in 0..o_ {
            let d = dout[i * o_ + o];
            g.db[o] += d;
            for k in 0..rc {
                du[i * rc + k] += d * p.wr[o * rc + k];
                g.dwr[o * rc + k] += d * u[i * rc + k];
            }
            for k in 0..c {
                g.dwself[o * c + k] += d * p.x[i * c + k];
                g.dx[i * c + k] += d * p.wself[o * c + k];
            }
        }
    }
    for e in 0..e_count {
        let seg = p.dst[e] * r + p.rel[e];
        if deg[seg] == 0.0 {
            continue;
        }
        let (dseg, useg) = (&du[seg * c..(seg + 1) * c], &u[seg * c..(seg + 1) * c]);
        let xs = &p.x[p.src[e] * c..(p.src[e] + 1) * c];
        for (dx, d) in g.dx[p.src[e] * c..(p.src[e] + 1) * c].iter_mut().zip(dseg) {
            *dx += p.w[e] / deg[seg] * d;
        }
        g.dw[e] = (0..c).map(|k| dseg[k] * (xs[k] - useg[k])).sum::<f64>() / deg[seg];
    }
    Ok(g)
}

/// How a segment readout reduces a graph's nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readout {
    /// Σ over the graph's nodes.
    Sum,
    /// The mean.
    Mean,
    /// The maximum per channel; its gradient goes whole to the lowest index among ties.
    Max,
}

fn check_ptr(ptr: &[usize], nodes: usize) -> Result<()> {
    if ptr.is_empty() || ptr[0] != 0 || ptr[ptr.len() - 1] != nodes || ptr.windows(2).any(|w| w[1] < w[0]) {
        return Err(Error::InvalidValue {
            arg: "ptr",
            reason: format!("must rise from 0 to the {nodes} nodes (nodes sorted by graph)"),
        });
    }
    Ok(())
}

/// The readout of x `[N, C]` over graphs `ptr [G + 1]` (the padding family's cu_seqlens
/// convention): `[G, C]`; an empty graph gives 0.
pub fn segment_readout(x: &[f64], ptr: &[usize], c: usize, mode: Readout) -> Result<Vec<f64>> {
    let nodes = x.len().checked_div(c).unwrap_or(0);
    check_host_matrix("x", x, nodes, c)?;
    check_ptr(ptr, nodes)?;
    let mut out = vec![0.0; (ptr.len() - 1) * c];
    for (g, w) in ptr.windows(2).enumerate() {
        for k in 0..c {
            let column = (w[0]..w[1]).map(|n| x[n * c + k]);
            out[g * c + k] = match mode {
                _ if w[0] == w[1] => 0.0,
                Readout::Sum => column.sum(),
                Readout::Mean => column.sum::<f64>() / (w[1] - w[0]) as f64,
                Readout::Max => column.fold(f64::NEG_INFINITY, f64::max),
            };
        }
    }
    Ok(out)
}

/// The backward of [`segment_readout`]: dx `[N, C]` given dout `[G, C]`.
pub fn segment_readout_backward(x: &[f64], ptr: &[usize], c: usize, mode: Readout, dout: &[f64]) -> Result<Vec<f64>> {
    let nodes = x.len().checked_div(c).unwrap_or(0);
    check_host_matrix("x", x, nodes, c)?;
    check_ptr(ptr, nodes)?;
    check_host_matrix("dout", dout, ptr.len() - 1, c)?;
    let mut dx = vec![0.0; x.len()];
    for (g, w) in ptr.windows(2).enumerate() {
        if w[0] == w[1] {
            continue;
        }
        for k in 0..c {
            let d = dout[g * c + k];
            match mode {
                Readout::Sum => (w[0]..w[1]).for_each(|n| dx[n * c + k] = d),
                Readout::Mean => (w[0]..w[1]).for_each(|n| dx[n * c + k] = d / (w[1] - w[0]) as f64),
                Readout::Max => {
                    // The first index holding the maximum: strictly greater replaces.
                    let best = (w[0]..w[1]).fold(w[0], |b, n| if x[n * c + k] > x[b * c + k] { n } else { b });
                    dx[best * c + k] = d;
                }
            }
        }
    }
    Ok(dx)
}

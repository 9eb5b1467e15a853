//! What the equivariant ops hand their launch code and return: validated operands of a tensor
//! product, convolution or Hessian, the host layouts of an edge list, and the gradients.
//!
//! Layer: families. Imports core; the API (mod.rs) and the launch code import it.

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::tensor::Tensor;
use crate::core::validate::Arg;

/// The largest row width, weight count, node or edge count the kernels index with 32 bits.
pub(super) const MAX_I32: usize = i32::MAX as usize;

/// The rows `t` claims: its first dimension (0 for a scalar). A rule "shape `[rows, width]`"
/// built on it holds exactly when t is `[r, width]` for some r, so an op can name the rows of
/// x or y in the rules of the arguments declared after them, before any shape is checked.
pub(super) fn claimed_rows(t: &Tensor) -> usize {
    t.shape().first().copied().unwrap_or(0)
}

/// An index tensor: i32 `[edges]`.
pub(super) fn index_arg<'a>(arg: &'static str, t: &'a Tensor, edges: usize) -> Arg<'a> {
    Arg::new(arg, t).dtype(DType::I32).shape_described(vec![edges], format!("[{edges}] (one per edge)"))
}

/// Gradients of [`tensor_product_backward`](super::tensor_product_backward) and [`conv_backward`](super::conv_backward), in the inputs' dtype and
/// device.
#[derive(Debug)]
pub struct Grads {
    /// ∂L/∂x1 (∂L/∂x for the convolution).
    pub dx1: Tensor,
    /// ∂L/∂x2 (∂L/∂y, one row per edge, for the convolution).
    pub dx2: Tensor,
    /// ∂L/∂w, w's shape (shared weights: summed over the samples or edges, in order).
    pub dw: Tensor,
}

/// The upstream gradients of a double backward
/// ([`tensor_product_double_backward`](super::tensor_product_double_backward),
/// [`conv_double_backward`](super::conv_double_backward)): of dx1, dx2 and dw, each shaped as
/// x1, x2 and w, in their dtype and device; `None` stands for zeros.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpstreamGrads<'a> {
    /// ∂L/∂(dx1) (∂L/∂(dx) for the convolution), x1's shape.
    pub gdx1: Option<&'a Tensor>,
    /// ∂L/∂(dx2) (∂L/∂(dy)), x2's shape.
    pub gdx2: Option<&'a Tensor>,
    /// ∂L/∂(dw), w's shape.
    pub gdw: Option<&'a Tensor>,
}

/// Gradients of a double backward: of L = ⟨gdx1, dx1⟩ + ⟨gdx2, dx2⟩ + ⟨gdw, dw⟩ with respect
/// to the backward's inputs, in their dtype and device.
#[derive(Debug)]
pub struct DoubleGrads {
    /// ∂L/∂x1 (∂L/∂x), x1's shape.
    pub gx1: Tensor,
    /// ∂L/∂x2 (∂L/∂y), x2's shape.
    pub gx2: Tensor,
    /// ∂L/∂w, w's shape.
    pub gw: Tensor,
    /// ∂L/∂dout, dout's shape.
    pub gdout: Tensor,
}

/// A validated edge list (any edge order) on the host, with its sender order: the host
/// references' edges, and the Hessian's layouts.
#[derive(Clone, Debug)]
// The sender layouts serve only the launch code, absent without a backend.
#[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
pub(crate) struct HostGraph {
    pub(super) src: Vec<i32>,
    pub(super) dst: Vec<i32>,
    /// The edges stably sorted by sender.
    pub(super) src_perm: Vec<i32>,
    /// CSR offsets of each sender's edges in `src_perm` `[nodes + 1]`.
    pub(super) src_ptr: Vec<i32>,
}

/// The values of an index tensor (i32 `[edges]`), each in `0..nodes`.
pub(super) fn index_values(arg: &'static str, t: &Tensor, nodes: usize) -> Result<Vec<i32>> {
    let v = t.to_f64_vec()?;
    if let Some(e) = v.iter().position(|&i| i < 0.0 || i >= nodes as f64) {
        return Err(Error::InvalidValue { arg, reason: format!("edge {e} has index {}, outside 0..{nodes}", v[e]) });
    }
    Ok(v.into_iter().map(|i| i as i32).collect())
}

#[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
impl HostGraph {
    pub(super) fn new(src: Vec<i32>, dst: Vec<i32>, nodes: usize) -> HostGraph {
        let mut src_perm: Vec<i32> = (0..src.len() as i32).collect();
        src_perm.sort_by_key(|&e| src[e as usize]);
        let mut src_ptr = vec![0i32; nodes + 1];
        for &s in &src {
            src_ptr[s as usize + 1] += 1;
        }
        for n in 0..nodes {
            src_ptr[n + 1] += src_ptr[n];
        }
        HostGraph { src, dst, src_perm, src_ptr }
    }

    /// The layouts of src and dst (i32 `[edges]` tensors on any device, any edge order), read
    /// to the host and checked: every index in `0..nodes` (else a typed error naming the
    /// argument and the edge).
    pub(super) fn from_tensors(src: &Tensor, dst: &Tensor, nodes: usize) -> Result<HostGraph> {
        let src = index_values("src", src, nodes)?;
        let dst = index_values("dst", dst, nodes)?;
        Ok(HostGraph::new(src, dst, nodes))
    }
}

/// Where the device layouts sit in [`GraphView::layouts`]: checked copies of src and dst, the
/// receiver order (dst_ptr, dst_perm) and the sender order (src_perm, src_ptr).
pub(crate) const LAYOUT_NAMES: [&str; 6] = ["src", "dst", "dst_ptr", "dst_perm", "src_perm", "src_ptr"];

/// A graph as the ops read it: the host layouts, or the device layouts (LAYOUT_NAMES' order;
/// each buffer holds at least one element, so the edge count travels beside them).
#[derive(Clone, Copy)]
pub(crate) enum GraphView<'a> {
    Host(&'a HostGraph),
    Device { layouts: [&'a Tensor; 6], edges: usize },
}

impl GraphView<'_> {
    /// The graph's edge count.
    pub(super) fn edges(&self) -> usize {
        match self {
            GraphView::Host(g) => g.src.len(),
            GraphView::Device { edges, .. } => *edges,
        }
    }

    /// A tensor on the graph's device, for the ops' device rule; `None` on the host.
    pub(super) fn device_tensor(&self) -> Option<&Tensor> {
        match self {
            GraphView::Host(_) => None,
            GraphView::Device { layouts, .. } => Some(layouts[0]),
        }
    }
}

/// Validated operands of a tensor product (no graph: sample n is edge n of node n) or of a
/// convolution.
// `shared` and `edges` serve only the launch code, absent without a backend.
#[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
pub(super) struct Operands<'a> {
    pub(super) x: &'a Tensor,
    pub(super) y: &'a Tensor,
    pub(super) w: &'a Tensor,
    pub(super) shared: bool,
    pub(super) nodes: usize,
    pub(super) edges: usize,
    pub(super) graph: Option<GraphView<'a>>,
}

/// Validated HIP Hessian operands: features, edges and molecules.
#[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
pub(super) struct HessianOperands<'a> {
    pub(super) edge_feat: &'a Tensor,
    pub(super) node_feat: &'a Tensor,
    pub(super) src: Vec<i32>,
    pub(super) dst: Vec<i32>,
    pub(super) n_atoms: Vec<usize>,
    pub(super) atoms: usize,
    /// The output's shape: `[3n, 3n]` for one molecule, `[Σ (3n)²]` for several.
    pub(super) shape: Vec<usize>,
}

#[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
impl HessianOperands<'_> {
    /// (src_perm, src_ptr, atom_mol, mol_first, mol_offset as i32 pairs) for the kernels.
    pub(super) fn layout(&self) -> [Vec<i32>; 5] {
        let graph = HostGraph::new(self.src.clone(), self.dst.clone(), self.atoms);
        let atom_mol: Vec<i32> =
            self.n_atoms.iter().enumerate().flat_map(|(k, &n)| std::iter::repeat_n(k as i32, n)).collect();
        let (mut first, mut offset) = (vec![0i32], vec![0i64]);
        for &n in &self.n_atoms {
            first.push(first[first.len() - 1] + n as i32);
            offset.push(offset[offset.len() - 1] + 9 * (n * n) as i64);
        }
        // int64 offsets travel as little-endian i32 pairs (Tensor has no i64 storage).
        let offset_words = offset.iter().flat_map(|&o| [o as i32, (o >> 32) as i32]).collect();
        [graph.src_perm, graph.src_ptr, atom_mol, first, offset_words]
    }
}

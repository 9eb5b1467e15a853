//! An edge list laid out once for the convolution ([`EdgeGraph`]), in any edge order: on a
//! device, checked and sorted by kernels with no host synchronisation, so the calls of a
//! training step that reuse it (and a CUDA graph that captures the step) never wait for the
//! host; on the host, checked and laid out there.
//!
//! Layer: families. Imports core and the family's operands; the API (mod.rs, which also builds
//! graphs: the launch code is reachable from there) and the launch code use it.

use super::operands::{GraphView, HostGraph};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::tensor::Tensor;

/// The convolution's edge list on one device, laid out once and reused by every call on it
/// ([`EdgeGraph::conv`], [`EdgeGraph::conv_backward`], [`EdgeGraph::conv_double_backward`]).
///
/// The edges may come in any order: each receiver sums its edges in their stable order by
/// receiver (the edge order within a receiver), so the results are deterministic and, for
/// edges already sorted by receiver, the same as before sorting. On a device the indices are
/// checked by the kernels that build the layouts, into a status word that [`EdgeGraph::build`]
/// does not read: [`EdgeGraph::check`] reads it (one host synchronisation, once per graph,
/// whenever the caller chooses). A convolution launched on a graph with bad indices stays in
/// bounds and its result is meaningless; `check` names the first bad edge.
///
/// ```
/// use kiln::equivariant::{EdgeGraph, PathNormalization, TpPlan};
/// use kiln::Tensor;
///
/// let plan = TpPlan::channelwise(&"2x0e+2x1o".parse()?, &"0e+1o".parse()?, &"2x0e+2x1o".parse()?,
///                                PathNormalization::Element)?;
/// // Three edges into two nodes, not sorted by receiver.
/// let graph = EdgeGraph::build(&Tensor::from_vec(vec![0i32, 1, 1], &[3])?,
///                              &Tensor::from_vec(vec![1i32, 0, 1], &[3])?, 2)?;
/// graph.check()?;
/// let x = Tensor::from_f64(&[0.5; 16], &[2, 8], kiln::DType::F32)?;
/// let y = Tensor::from_f64(&[1.0; 12], &[3, 4], kiln::DType::F32)?;
/// let w = Tensor::from_f64(&vec![1.0; plan.weight_numel], &[plan.weight_numel], kiln::DType::F32)?;
/// let out = graph.conv(&plan, (&x, &y, &w))?;
/// assert_eq!(out.shape(), &[2, plan.irreps_out.dim()]);
/// # Ok::<(), kiln::Error>(())
/// ```
pub struct EdgeGraph {
    nodes: usize,
    edges: usize,
    layouts: Layouts,
}

enum Layouts {
    /// Host tensors: checked at build, laid out on the host.
    Host(HostGraph),
    /// Device tensors: the layouts kiln_equivariant_graph_build writes, and its status words.
    Device { tensors: Box<[Tensor; 6]>, status: Tensor },
}

impl EdgeGraph {
    /// A graph laid out on the host (its indices checked there).
    pub(super) fn on_host(nodes: usize, edges: usize, graph: HostGraph) -> EdgeGraph {
        EdgeGraph { nodes, edges, layouts: Layouts::Host(graph) }
    }

    /// A graph laid out on a device: kiln_equivariant_graph_build's layouts (LAYOUT_NAMES'
    /// order) and status words.
    pub(super) fn on_device(nodes: usize, edges: usize, tensors: [Tensor; 6], status: Tensor) -> EdgeGraph {
        EdgeGraph { nodes, edges, layouts: Layouts::Device { tensors: Box::new(tensors), status } }
    }

    /// Reads the device's verdict on the indices (one host synchronisation): a typed error
    /// naming the lowest edge with an index outside `0..nodes` and which index it is. Host
    /// graphs were checked at build.
    pub fn check(&self) -> Result<()> {
        match &self.layouts {
            Layouts::Host(_) => Ok(()),
            Layouts::Device { status, .. } => data_status(status, self.nodes),
        }
    }

    /// The node count the graph was built for.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The edge count.
    pub fn edges(&self) -> usize {
        self.edges
    }

    /// The receiver order: the edge ids stably sorted by dst, i32 `[edges]` on the graph's
    /// device (see [`sort_edges`](super::sort_edges)).
    pub fn into_receiver_order(self) -> Result<Tensor> {
        match self.layouts {
            Layouts::Host(g) => {
                let mut perm: Vec<i32> = (0..g.dst.len() as i32).collect();
                perm.sort_by_key(|&e| g.dst[e as usize]); // stable: edge order within a receiver
                Tensor::from_vec(perm, &[self.edges])
            }
            Layouts::Device { tensors, .. } => {
                let [_, _, _, perm, _, _] = *tensors;
                // The buffer is padded to one element when there are no edges.
                if self.edges == 0 { Tensor::uninit(&[0], DType::I32, &perm.device()) } else { Ok(perm) }
            }
        }
    }

    /// The layouts as the ops read them.
    pub(crate) fn view(&self) -> GraphView<'_> {
        match &self.layouts {
            Layouts::Host(g) => GraphView::Host(g),
            Layouts::Device { tensors, .. } => {
                GraphView::Device { layouts: [0, 1, 2, 3, 4, 5].map(|i| &tensors[i]), edges: self.edges }
            }
        }
    }

    /// The device layouts (LAYOUT_NAMES' order) and status words, for a caller that keeps them
    /// apart (the registry's prepared runs); `None` for a host graph.
    pub(crate) fn into_device_parts(self) -> Option<([Tensor; 6], Tensor)> {
        match self.layouts {
            Layouts::Host(_) => None,
            Layouts::Device { tensors, status } => Some((*tensors, status)),
        }
    }
}

/// The status words of a device build mapped to a typed error (kiln.h,
/// kiln_equivariant_graph_build).
fn data_status(status: &Tensor, nodes: usize) -> Result<()> {
    let words = status.to_f64_vec()?;
    if words[0] as i32 == 0 {
        return Ok(());
    }
    let at = words[1] as i32 as u32;
    let (arg, edge) = if at & 1 == 0 { ("src", at / 2) } else { ("dst", at / 2) };
    Err(Error::InvalidValue {
        arg,
        reason: format!("edge {edge} has an index outside 0..{nodes} (status {}, found on the device)", words[0]),
    })
}

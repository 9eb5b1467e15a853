//! The registry entry `equivariant/graph`: the convolution's edge layouts built from an edge list
//! in any order (kiln_equivariant_graph_build: checked index copies, the receiver and sender
//! orders and their segment offsets, on the device with no host round trip). Its output is the
//! receiver order (`sort_edges`); a run also reads the status word once, as every one-call
//! convolution does. Timing it prices the per-call cost of `conv` against `EdgeGraph`'s
//! build-once form.

use rand::Rng;
use rand::rngs::StdRng;

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::families::equivariant::sort_edges;
use crate::ops::check_row::CheckRow;
use crate::ops::params::Params;
use crate::ops::registry::{ArgSpec, Array, Arrays, Direction, Op, Problem, Tensors, input, no_direction, put_output};
use crate::ops::self_check::reference_row;

/// `graph`: src, dst `[edges]` (i32, indices in `0..nodes`) → perm `[edges]`, the edge ids
/// stably sorted by dst. Forward only; every tensor is i32.
#[derive(Clone, Copy, Debug)]
pub struct GraphBuild;

/// The entry.
pub fn entries() -> Vec<Box<dyn Op>> {
    vec![Box::new(GraphBuild)]
}

/// The parameter `nodes` as a count, or a typed error naming it.
fn nodes_of(params: &Params) -> Result<usize> {
    let n = params.get("nodes").copied().ok_or(Error::InvalidValue { arg: "nodes", reason: "missing".into() })?;
    if n < 0.0 || n.fract() != 0.0 || n > i32::MAX as f64 {
        return Err(Error::InvalidValue { arg: "nodes", reason: format!("a whole number below 2^31, got {n}") });
    }
    Ok(n as usize)
}

/// The receiver order by sorting (stable: edge order within a receiver).
fn receiver_order(dst: &[f64]) -> Vec<f64> {
    let mut perm: Vec<usize> = (0..dst.len()).collect();
    perm.sort_by(|&a, &b| dst[a].total_cmp(&dst[b]));
    perm.into_iter().map(|e| e as f64).collect()
}

/// The receiver order by its definition, one node at a time: node 0's edges in edge order, then
/// node 1's, and so on (O(nodes · edges); the self-checks' independent formulation).
fn receiver_order_by_scan(dst: &[f64], nodes: usize) -> Vec<f64> {
    (0..nodes).flat_map(|n| (0..dst.len()).filter(move |&e| dst[e] == n as f64)).map(|e| e as f64).collect()
}

impl Op for GraphBuild {
    fn family(&self) -> &'static str {
        "equivariant"
    }

    fn name(&self) -> &'static str {
        "graph"
    }

    /// Indices only: the op has no floating-point storage, and runs in i32 whatever a caller's
    /// features are.
    fn dtypes(&self) -> &'static [DType] {
        &[DType::I32]
    }

    fn directions(&self) -> &'static [Direction] {
        &[Direction::Fwd]
    }

    fn inputs(&self, dir: Direction) -> Vec<ArgSpec> {
        match dir {
            Direction::Fwd => vec![ArgSpec::i32("src"), ArgSpec::i32("dst")],
            _ => vec![],
        }
    }

    fn outputs(&self, dir: Direction, problem: &Problem) -> Result<Vec<(ArgSpec, Vec<usize>)>> {
        match dir {
            Direction::Fwd => Ok(vec![(ArgSpec::i32("perm"), problem.input_shape("dst")?)]),
            _ => Err(no_direction(self, dir)),
        }
    }

    fn params(&self) -> &'static [(&'static str, f64)] {
        &[("nodes", 1.0)]
    }

    fn launcher(&self, _dir: Direction) -> String {
        "kiln_equivariant_graph_build".into()
    }

    /// Shape `[edges, nodes]` (nodes defaults to one per 16 edges): src and dst uniform over the
    /// nodes, so receivers' segments vary in length and come in no order.
    fn random_problem(&self, _dir: Direction, shape: &[usize], rng: &mut StdRng) -> Problem {
        let edges = shape.first().copied().unwrap_or(1);
        let nodes = shape.get(1).copied().unwrap_or(edges / 16).max(1);
        let mut p = Problem::default();
        p.params.insert("nodes".into(), nodes as f64);
        let mut index = || Array::new(vec![edges], (0..edges).map(|_| rng.random_range(0..nodes) as f64).collect());
        p.inputs.insert("src".into(), index());
        p.inputs.insert("dst".into(), index());
        p
    }

    fn reference(&self, dir: Direction, problem: &Problem) -> Result<Arrays> {
        if dir != Direction::Fwd {
            return Err(no_direction(self, dir));
        }
        let nodes = nodes_of(&problem.params)?;
        for name in ["src", "dst"] {
            if let Some(e) = problem.input(name)?.data.iter().position(|&v| !(0.0..nodes as f64).contains(&v)) {
                return Err(Error::InvalidValue {
                    arg: name,
                    reason: format!("edge {e} has an index outside 0..{nodes}"),
                });
            }
        }
        let dst = problem.input("dst")?;
        let mut out = Arrays::new();
        out.insert("perm".into(), Array::new(dst.shape.clone(), receiver_order(&dst.data)));
        Ok(out)
    }

    fn naive_reductions(&self, _dir: Direction, _problem: &Problem, _dtype: DType) -> Result<Arrays> {
        Ok(Arrays::new())
    }

    fn run(&self, dir: Direction, inputs: &Tensors, params: &Params, outputs: &mut Tensors) -> Result<()> {
        if dir != Direction::Fwd {
            return Err(no_direction(self, dir));
        }
        let perm = sort_edges(input(inputs, "src")?, input(inputs, "dst")?, nodes_of(params)?)?;
        put_output(outputs, "perm", perm)
    }

    /// What the layouts cost at minimum: src and dst read, and written back as the checked
    /// copies, the two orders and their offsets (4 bytes each), and the status words.
    fn bytes(&self, _dir: Direction, problem: &Problem, _dtype: DType) -> u64 {
        let edges = problem.get("dst").map_or(0, |a| a.data.len() as u64);
        let nodes = nodes_of(&problem.params).unwrap_or(0) as u64;
        4 * (2 * edges + 4 * edges + 2 * (nodes + 1) + 2)
    }

    fn flops(&self, _dir: Direction, _problem: &Problem) -> u64 {
        0
    }

    /// No edges; one node; more edges on a node than a warp has lanes (the rank sort's second
    /// window); many nodes with few edges; and a GPU-only size past the emulator's budget.
    fn check_shapes(&self) -> Vec<Vec<usize>> {
        vec![vec![0, 3], vec![1, 1], vec![7, 3], vec![100, 2], vec![1000, 300], vec![1 << 20, 1 << 16]]
    }

    /// 1M edges over 64k nodes (16 a receiver, as a molecular graph with a 5 Å cutoff).
    fn bench_shape_gpu(&self) -> Vec<usize> {
        vec![1 << 20, 1 << 16]
    }

    fn bench_shape_cpu(&self) -> Vec<usize> {
        vec![1 << 14, 1 << 10]
    }

    /// The reference against the definition scanned node by node, on a random graph with
    /// repeated receivers and on one whose edges come sorted (the identity).
    fn self_checks(&self, rng: &mut StdRng) -> Vec<CheckRow> {
        let p = self.random_problem(Direction::Fwd, &[200, 7], rng);
        let (dst, nodes) = (&p.inputs["dst"].data, 7);
        let sorted: Vec<f64> = (0..40).map(|e| (e / 8) as f64).collect();
        let identity: Vec<f64> = (0..40).map(|e| e as f64).collect();
        vec![
            reference_row(
                self,
                "receiver order = scan by node",
                &receiver_order(dst),
                &receiver_order_by_scan(dst, nodes),
                0.0,
            ),
            reference_row(self, "sorted edges: identity", &receiver_order(&sorted), &identity, 0.0),
        ]
    }
}

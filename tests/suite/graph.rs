//! GlycanAA's graph blocks' f64 references (issue 29, step 1): the relational graph convolution
//! against torchdrug's dense formulation and its gradients against central differences; the
//! segment readouts against their definitions, with empty graphs and ties.

use kiln::Error;
use kiln::graph::cpu::{Readout, Rgcn, RgcnGrads, rgcn, rgcn_backward, segment_readout, segment_readout_backward};
use rand::rngs::StdRng;

use crate::common::{assert_close, central_gradient, dot, rng, uniform};

const N: usize = 5;
const R: usize = 3;
const C: usize = 4;
const O: usize = 2;

struct Graph {
    x: Vec<f64>,
    src: Vec<usize>,
    dst: Vec<usize>,
    rel: Vec<usize>,
    w: Vec<f64>,
    wr: Vec<f64>,
    wself: Vec<f64>,
    b: Vec<f64>,
}

fn graph(rng: &mut StdRng) -> Graph {
    // Segments (dst, rel) with one, two and three edges, and many empty ones.
    let src = vec![0, 1, 2, 3, 4, 1, 0, 2];
    let dst = vec![1, 1, 1, 0, 0, 3, 4, 4];
    let rel = vec![0, 0, 2, 1, 1, 1, 2, 2];
    let e = src.len();
    Graph {
        x: uniform(rng, N * C, -1.0, 1.0),
        w: uniform(rng, e, 0.3, 1.5),
        wr: uniform(rng, O * R * C, -1.0, 1.0),
        wself: uniform(rng, O * C, -1.0, 1.0),
        b: uniform(rng, O, -1.0, 1.0),
        src,
        dst,
        rel,
    }
}

fn view(g: &Graph) -> Rgcn<'_> {
    Rgcn {
        x: &g.x,
        src: &g.src,
        dst: &g.dst,
        rel: &g.rel,
        w: &g.w,
        wr: &g.wr,
        wself: &g.wself,
        b: &g.b,
        nodes: N,
        relations: R,
        c: C,
        o: O,
    }
}

/// torchdrug's dense path: adjacency A (N, N·R) with A[src, dst·R + rel] = w, update = Aᵀ·X
/// (N·R, C) divided by A's column sums, viewed (N, R·C), then the Linear layers.
fn dense(g: &Graph) -> Vec<f64> {
    let mut adj = vec![0.0; N * N * R];
    for e in 0..g.src.len() {
        adj[g.src[e] * N * R + g.dst[e] * R + g.rel[e]] += g.w[e];
    }
    let mut update = vec![0.0; N * R * C];
    for col in 0..N * R {
        let degree: f64 = (0..N).map(|j| adj[j * N * R + col]).sum();
        for k in 0..C {
            let s: f64 = (0..N).map(|j| adj[j * N * R + col] * g.x[j * C + k]).sum();
            update[col * C + k] = if degree != 0.0 { s / degree } else { 0.0 };
        }
    }
    (0..N * O)
        .map(|t| {
            let (i, o) = (t / O, t % O);
            dot(&g.wr[o * R * C..(o + 1) * R * C], &update[i * R * C..(i + 1) * R * C])
                + dot(&g.wself[o * C..(o + 1) * C], &g.x[i * C..(i + 1) * C])
                + g.b[o]
        })
        .collect()
}

#[test]
fn rgcn_matches_torchdrugs_dense_formulation_and_its_gradients_match() {
    let mut rng = rng();
    let g = graph(&mut rng);
    let p = view(&g);
    let out = rgcn(&p).unwrap();
    assert_close(&out, &dense(&g), 1e-14, "sparse = dense");
    // Node 2 receives nothing: its output is the self loop and the bias alone.
    for o in 0..O {
        let want = dot(&g.wself[o * C..(o + 1) * C], &g.x[2 * C..3 * C]) + g.b[o];
        assert!((out[2 * O + o] - want).abs() < 1e-15);
    }
    let dout = uniform(&mut rng, N * O, -1.0, 1.0);
    let RgcnGrads { dx, dwr, dwself, db, dw } = rgcn_backward(&p, &dout).unwrap();
    let loss = |q: &Rgcn| dot(&rgcn(q).unwrap(), &dout);
    let h = 1e-6;
    assert_close(&dx, &central_gradient(&g.x, h, |v| loss(&Rgcn { x: v, ..p })), 1e-8, "dx");
    assert_close(&dwr, &central_gradient(&g.wr, h, |v| loss(&Rgcn { wr: v, ..p })), 1e-8, "dwr");
    assert_close(&dwself, &central_gradient(&g.wself, h, |v| loss(&Rgcn { wself: v, ..p })), 1e-8, "dwself");
    assert_close(&db, &central_gradient(&g.b, h, |v| loss(&Rgcn { b: v, ..p })), 1e-8, "db");
    assert_close(&dw, &central_gradient(&g.w, h, |v| loss(&Rgcn { w: v, ..p })), 1e-8, "dw");
    // A lone edge in its segment: the mean is X[src] whatever w is, so dw is 0.
    assert!(dw[2].abs() < 1e-15, "edge 2 alone in (1, rel 2): {}", dw[2]);
}

#[test]
fn readouts_follow_their_definitions_with_empty_graphs_and_ties() {
    let mut rng = rng();
    let c = 3;
    // Graphs of 3, 0 and 2 nodes.
    let ptr = [0usize, 3, 3, 5];
    let mut x = uniform(&mut rng, 5 * c, -1.0, 1.0);
    for mode in [Readout::Sum, Readout::Mean, Readout::Max] {
        let out = segment_readout(&x, &ptr, c, mode).unwrap();
        for k in 0..c {
            let first: Vec<f64> = (0..3).map(|n| x[n * c + k]).collect();
            let want = match mode {
                Readout::Sum => first.iter().sum(),
                Readout::Mean => first.iter().sum::<f64>() / 3.0,
                Readout::Max => first.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            };
            assert!((out[k] - want).abs() < 1e-15, "{mode:?} channel {k}");
            assert_eq!(out[c + k], 0.0, "{mode:?}: the empty graph");
        }
        let dout = uniform(&mut rng, 3 * c, -1.0, 1.0);
        let dx = segment_readout_backward(&x, &ptr, c, mode, &dout).unwrap();
        let fd = central_gradient(&x, 1e-6, |v| dot(&segment_readout(v, &ptr, c, mode).unwrap(), &dout));
        assert_close(&dx, &fd, 1e-8, &format!("{mode:?} dx"));
    }
    // Ties: the whole gradient to the lowest index.
    x[0] = 0.75;
    x[c] = 0.75;
    x[2 * c] = 0.75;
    let dx = segment_readout_backward(&x, &ptr, c, Readout::Max, &[1.0; 9]).unwrap();
    assert_eq!((dx[0], dx[c], dx[2 * c]), (1.0, 0.0, 0.0));
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut rng = rng();
    let g = graph(&mut rng);
    let p = view(&g);
    let bad = [0, 1, 2, 3, 4, 1, 0, 9];
    assert!(matches!(rgcn(&Rgcn { src: &bad, ..p }), Err(Error::InvalidValue { arg: "src", .. })));
    assert!(matches!(rgcn(&Rgcn { dst: &bad, ..p }), Err(Error::InvalidValue { arg: "dst", .. })));
    assert!(matches!(rgcn(&Rgcn { rel: &[0, 0, 2, 1, 1, 1, 2, 3], ..p }), Err(Error::InvalidValue { arg: "rel", .. })));
    assert!(matches!(rgcn(&Rgcn { w: &g.w[..7], ..p }), Err(Error::Shape { arg: "w", .. })));
    assert!(matches!(rgcn(&Rgcn { wr: &g.wr[..7], ..p }), Err(Error::Shape { arg: "wr", .. })));
    assert!(matches!(rgcn_backward(&p, &[0.0; 3]), Err(Error::Shape { arg: "dout", .. })));
    let x = [0.0; 6];
    for ptr in [&[0usize, 2, 1, 3][..], &[0, 2][..], &[1, 3][..], &[][..]] {
        assert!(
            matches!(segment_readout(&x, ptr, 2, Readout::Sum), Err(Error::InvalidValue { arg: "ptr", .. })),
            "{ptr:?}"
        );
    }
    assert!(matches!(segment_readout(&x[..5], &[0, 2], 2, Readout::Sum), Err(Error::Shape { arg: "x", .. })));
    assert!(matches!(
        segment_readout_backward(&x, &[0, 3], 2, Readout::Max, &[0.0; 3]),
        Err(Error::Shape { arg: "dout", .. })
    ));
}
